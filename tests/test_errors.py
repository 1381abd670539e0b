"""Nothing lost, nothing silent: bad inputs get a clear error, and a failed round loses nothing.

Every error names the value that is wrong, says what was expected and how to fix it.
Each test reads as one documented behaviour; the data are tiny so the whole file runs fast.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft
from fedteach.rounds import fedavg

ENGINES = ("fast", "general")
SPEC = {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}


def clients(sizes=(6, 5, 4), labels=None, seed=0):
    rng = np.random.default_rng(seed)
    return ft.ClientData.from_arrays({
        f"writer_{i}": {"label": (rng.integers(0, 10, n) if labels is None else np.full(n, labels)).astype(np.int32),
                        "pixels": rng.random((n, 28, 28), dtype=np.float32)}
        for i, n in enumerate(sizes)})


def federated(client_data, ids=None, batch_size=4):
    ids = client_data.client_ids if ids is None else ids
    return ft.make_federated_data(client_data, ids, ft.preprocess_for_tutorial(num_epochs=1, batch_size=batch_size,
                                                                                 shuffle_buffer=0))


def model_fn(units=10, learning_rate=0.1):
    def build():
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="softmax")])
        return ft.from_keras_model(net, "sparse_categorical_crossentropy", SPEC, metrics=["accuracy"])
    return build


def process(engine, learning_rate=0.1, units=10):
    return ft.build_federated_averaging_process(
        model_fn(units), lambda: keras.optimizers.SGD(learning_rate), engine=engine)


# --- clients ---------------------------------------------------------------------------------------

def test_unknown_client_id_suggests_close_matches():
    with pytest.raises(ft.UnknownClientError) as error:
        federated(clients(), ["writer_0", "writer_7", "wrtier_1"])
    assert str(error.value) == ("Unknown client id 'writer_7': this ClientData has 3 clients. Did you mean "
                                "'writer_2' or 'writer_1' or 'writer_0'? Pick ids from `client_data.client_ids`.")
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_round_with_no_clients_is_refused(engine):
    p = process(engine)
    with pytest.raises(ValueError, match="a round needs at least one client: federated_data is empty"):
        p.next(p.initialize(), [])


def test_evaluation_with_no_clients_is_refused():
    evaluation = ft.build_federated_evaluation(model_fn())
    with pytest.raises(ValueError, match="evaluation needs at least one client"):
        evaluation(process("fast").initialize().model, [])


def test_more_clients_per_round_than_exist_is_refused():
    with pytest.raises(ValueError, match=r"num_clients must be between 1 and the number of clients \(3\), got 4\. "
                                         r"Ask for at most 3 clients per round"):
        ft.sample_clients(["a", "b", "c"], 4, round_num=1)
    with pytest.raises(ValueError, match="got 0"):
        ft.sample_clients(["a", "b", "c"], 0, round_num=1)


# --- data that does not fit the model -----------------------------------------------------------

def unflattened(client_data):
    """A preprocess that forgets to flatten the 28x28 pixels."""
    return [client_data.create_tf_dataset_for_client(c).map(lambda e: {"x": e["pixels"], "y": e["label"][None]})
            .batch(4) for c in client_data.client_ids]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_shape_that_does_not_fit_the_input_spec_names_client_and_field(engine):
    p = process(engine)
    with pytest.raises(ValueError, match=r"client 'writer_0', field 'x': .*shape \[28, 28\].* expects \[784\]"):
        p.next(p.initialize(), unflattened(clients()))


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_fields_name_the_client_and_the_expected_fields(engine):
    p = process(engine)
    data = [clients().create_tf_dataset_for_client("writer_1").map(lambda e: {"x": tf.reshape(e["pixels"], [-1])})
            .batch(4)]
    with pytest.raises(ValueError, match=r"client 'writer_1': its batches have fields \['x'\] but the model's "
                                         r"input_spec expects \['x', 'y'\]"):
        p.next(p.initialize(), data)


def test_a_plain_tf_dataset_of_the_wrong_shape_is_named_by_its_position():
    p = process("general")
    good = federated(clients())[0]
    bad = tf.data.Dataset.from_tensor_slices({"x": np.zeros((4, 10), np.float32),
                                              "y": np.zeros((4, 1), np.int32)}).batch(2)
    with pytest.raises(ValueError, match=r"client #1 \(position in federated_data\), field 'x': batches have "
                                         r"shape \[None, 10\]"):
        p.next(p.initialize(), [good, bad])


def test_unbatched_data_gets_a_hint_to_batch():
    p = process("general")
    data = [ds.unbatch() for ds in federated(clients())]
    with pytest.raises(ValueError, match=r"batches have shape \[784\] .* Are the examples batched\? Add "
                                         r"\.batch\(batch_size\)"):
        p.next(p.initialize(), data)


def test_evaluation_checks_the_input_spec_too():
    evaluation = ft.build_federated_evaluation(model_fn())
    with pytest.raises(ValueError, match=r"client 'writer_0', field 'x'"):
        evaluation(process("fast").initialize().model, unflattened(clients()))


@pytest.mark.parametrize("engine", ENGINES)
def test_labels_outside_the_models_classes_are_refused(engine):
    p = process(engine, units=10)
    with pytest.raises(ValueError, match=r"client 'writer_1', field 'label': label 12 is outside the model's 10 "
                                         r"classes \(labels must be 0\.\.9; .*at least 13\)"):
        p.next(p.initialize(), federated(clients(labels=3)) + federated(clients(labels=12))[1:2])


def test_evaluation_refuses_labels_outside_the_classes():
    evaluation = ft.build_federated_evaluation(model_fn(units=10))
    with pytest.raises(ValueError, match="label -1 is outside the model's 10 classes"):
        evaluation(process("fast").initialize().model, federated(clients(labels=-1)))


def test_a_batch_size_of_zero_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"preprocess_for_tutorial needs batch_size >= 1, got 0\. The tutorial uses"):
        ft.preprocess_for_tutorial(batch_size=0)
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        clients().create_tf_dataset_for_client("writer_0").batch(0)


# --- empty clients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_an_empty_client_is_skipped_with_a_warning_and_the_metrics_stay_finite(engine):
    p = process(engine)
    data = federated(clients(sizes=(6, 0, 5)))
    with pytest.warns(UserWarning, match=r"round 1: skipped 1 client\(s\) with no examples: 'writer_1'\. "
                                         r"The round goes on"):
        state, metrics = p.next(p.initialize(), data)
    assert metrics["num_examples"] == 11
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["accuracy"])
    assert p.path == engine


@pytest.mark.parametrize("engine", ENGINES)
def test_only_empty_clients_is_an_error_not_a_nan(engine):
    p = process(engine)
    with pytest.raises(ValueError, match="round 1: every client's dataset is empty, nothing to train on"):
        p.next(p.initialize(), federated(clients(sizes=(0, 0))))


def test_evaluation_skips_empty_clients_and_refuses_all_empty():
    evaluation = ft.build_federated_evaluation(model_fn())
    weights = process("fast").initialize().model
    with pytest.warns(UserWarning, match=r"evaluation: skipped 1 client\(s\) with no examples: 'writer_0'"):
        metrics = evaluation(weights, federated(clients(sizes=(0, 4))))
    assert metrics["num_examples"] == 4 and np.isfinite(metrics["loss"])
    with pytest.raises(ValueError, match="every client's dataset is empty: nothing to evaluate"):
        evaluation(weights, federated(clients(sizes=(0, 0))))


# --- building a process ----------------------------------------------------------------------------

def test_a_built_model_instead_of_model_fn_is_refused():
    with pytest.raises(TypeError, match=r"model_fn must be a constructor, not an already built model: pass "
                                        r"`model_fn`, not `model_fn\(\)`"):
        ft.build_federated_averaging_process(model_fn()(), lambda: keras.optimizers.SGD(0.1))
    with pytest.raises(TypeError, match="model_fn must be a constructor"):
        ft.build_federated_evaluation(model_fn()())


def test_model_fn_returning_a_keras_model_is_told_to_wrap_it():
    with pytest.raises(TypeError, match="model_fn returned a Sequential; it must return a fedteach Model"):
        ft.build_federated_averaging_process(lambda: keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                                             lambda: keras.optimizers.SGD(0.1))


@pytest.mark.parametrize("learning_rate", [0.0, -0.1, float("nan")])
def test_a_learning_rate_that_is_not_positive_is_refused_at_build_time(learning_rate):
    with pytest.raises(ValueError, match=r"the client learning rate must be a positive number, got .*\. Use a "
                                         r"small positive value, e\.g\. client_optimizer_fn="):
        ft.build_federated_averaging_process(model_fn(), lambda: keras.optimizers.SGD(learning_rate))
    with pytest.raises(ValueError, match="the server learning rate must be a positive number"):
        ft.build_federated_averaging_process(model_fn(), lambda: keras.optimizers.SGD(0.1),
                                             lambda: keras.optimizers.SGD(learning_rate))


def test_a_state_from_another_model_is_refused():
    small = ft.build_federated_averaging_process(model_fn(units=2), lambda: keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="this state belongs to a different model"):
        process("fast").next(small.initialize(), federated(clients()))
    with pytest.raises(TypeError, match="next\\(\\) expects the ServerState"):
        process("fast").next(small.initialize().model, federated(clients()))
    with_momentum = ft.build_federated_averaging_process(model_fn(), lambda: keras.optimizers.SGD(0.1),
                                                         lambda: keras.optimizers.SGD(1.0, momentum=0.9))
    with pytest.raises(ValueError, match="this state belongs to a different server optimizer: its optimizer_state "
                                         "holds 1 arrays"):
        with_momentum.next(process("fast").initialize(), federated(clients()))


# --- divergence ------------------------------------------------------------------------------------

def linear_regression():
    """A model that plain SGD with a huge learning rate blows up within two rounds."""
    return ft.from_keras_model(keras.Sequential([keras.Input((784,)), keras.layers.Dense(1)]),
                               "mean_squared_error", SPEC)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_diverging_round_names_the_round_and_keeps_the_last_good_state(engine):
    p = ft.build_federated_averaging_process(linear_regression, lambda: keras.optimizers.SGD(1e6), engine=engine)
    data = federated(clients(sizes=(8, 8), seed=1))
    state, history = p.initialize(), []
    with pytest.raises(ft.DivergenceError, match=r"round 2 diverged: the model weights or the loss became NaN/Inf\. "
                                                 r"Try a smaller client or server learning rate\. The state you "
                                                 r"passed to next\(\) \(after round 1\) is unchanged"):
        for _ in range(5):
            state, metrics = p.next(state, data)
            history.append(metrics)
    assert state.round_num == 1 and len(history) == 1
    assert all(np.isfinite(w).all() for w in state.model.trainable.values())
    # The kept state is usable: a process with a sane learning rate continues from it.
    saner = ft.build_federated_averaging_process(linear_regression, lambda: keras.optimizers.SGD(1e-9),
                                                 engine=engine)
    new_state, metrics = saner.next(state, data)
    assert new_state.round_num == 2 and np.isfinite(metrics["loss"])
    assert np.isfinite(ft.build_federated_evaluation(linear_regression)(state.model, data)["loss"])


def test_divergence_error_is_a_floating_point_error():
    assert issubclass(ft.DivergenceError, FloatingPointError)


# --- interrupts ------------------------------------------------------------------------------------

def snapshot(state):
    return state.model.map(np.copy), tuple(np.copy(s) for s in state.optimizer_state)


def assert_unchanged(state, copy):
    weights, optimizer_state = copy
    for name in weights.trainable:
        np.testing.assert_array_equal(state.model.trainable[name], weights.trainable[name])
    for a, b in zip(state.optimizer_state, optimizer_state):
        np.testing.assert_array_equal(a, b)


def test_an_interrupt_between_two_clients_leaves_state_and_history_at_the_last_round(monkeypatch):
    p = process("general")
    data = [ds.filter(lambda batch: True) for ds in federated(clients())]  # tf.data pipelines: one client at a time
    state, history = p.initialize(), []
    state, metrics = p.next(state, data)
    history.append(metrics)
    copy = snapshot(state)
    reference_state, reference_metrics = process("general").next(process("general").next(p.initialize(), data)[0], data)
    runner = p._engine.runner
    original, calls = runner.train, []

    def train_then_interrupt(weights, dataset, *rest):
        calls.append(dataset)
        if len(calls) == 2:  # Ctrl-C while the second client trains: the first one is done
            raise KeyboardInterrupt
        return original(weights, dataset, *rest)

    monkeypatch.setattr(runner, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(2):
            state, metrics = p.next(state, data)
            history.append(metrics)
    monkeypatch.setattr(runner, "train", original)
    assert len(history) == 1 and state.round_num == 1
    assert_unchanged(state, copy)
    resumed, metrics = p.next(state, data)
    assert dict(metrics) == dict(reference_metrics)
    for name in resumed.model.trainable:
        np.testing.assert_array_equal(resumed.model.trainable[name], reference_state.model.trainable[name])


@pytest.mark.parametrize("engine", ENGINES)
def test_an_interrupt_in_the_server_update_applies_nothing(engine, monkeypatch):
    p = process(engine)
    data = federated(clients())
    state, _ = p.next(p.initialize(), data)
    copy = snapshot(state)
    reference, reference_metrics = process(engine).next(process(engine).next(p.initialize(), data)[0], data)
    original = fedavg.ServerOptimizer.apply

    def apply_then_interrupt(self, weights, optimizer_state, update):
        original(self, weights, optimizer_state, update)  # the shared tf.Variables now hold the new weights
        raise KeyboardInterrupt

    monkeypatch.setattr(fedavg.ServerOptimizer, "apply", apply_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        p.next(state, data)
    monkeypatch.setattr(fedavg.ServerOptimizer, "apply", original)
    assert_unchanged(state, copy)
    # Nothing of the interrupted update leaks into the next round: it equals a round never interrupted.
    resumed, metrics = p.next(state, data)
    assert dict(metrics) == dict(reference_metrics)
    for name in resumed.model.trainable:
        np.testing.assert_array_equal(resumed.model.trainable[name], reference.model.trainable[name])


def test_the_server_optimizer_starts_from_the_state_it_is_given_not_from_its_variables():
    w = ft.ModelWeights.from_lists([np.zeros(2, np.float32)], [], ["b"])
    server = fedavg.ServerOptimizer(keras.optimizers.SGD(1.0, momentum=0.9), w)
    first, state1 = server.apply(w, server.initial_state(), [np.ones(2, np.float32)])
    server.apply(first, state1, [np.full(2, 5.0, np.float32)])  # moves the shared variables elsewhere
    again, state_again = server.apply(w, server.initial_state(), [np.ones(2, np.float32)])
    np.testing.assert_array_equal(again.trainable["b"], first.trainable["b"])
    for a, b in zip(state_again, state1):
        np.testing.assert_array_equal(a, b)


def test_labels_outside_the_classes_are_refused_on_the_fast_path_even_after_a_custom_map():
    import keras
    import tensorflow as tf

    clients = ft.ClientData.from_arrays({
        "writer_0": {"pixels": np.ones((4, 28, 28), np.float32), "label": np.array([1, 2, 3, 4], np.int32)},
        "writer_1": {"pixels": np.ones((4, 28, 28), np.float32), "label": np.array([1, 2, 12, 4], np.int32)}})

    def preprocess(dataset):
        def element_fn(element):
            return {"x": tf.reshape(element["pixels"], [-1]), "y": tf.reshape(element["label"], [1])}
        return dataset.map(element_fn).batch(2)

    data = [preprocess(clients.create_tf_dataset_for_client(c)) for c in clients.client_ids]

    def model_fn():
        net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
        return ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(),
                                   {"x": tf.TensorSpec([None, 784]), "y": tf.TensorSpec([None, 1], tf.int32)})

    process = ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.1), engine="fast")
    with pytest.raises(ValueError, match=r"client 'writer_1', field 'y': label 12 is outside the model's 10 classes"):
        process.next(process.initialize(), data)


def test_an_optimizer_instead_of_a_function_says_what_to_pass():
    """`server_optimizer_fn=ft.optimizers.fed_adam(0.01)` used to fail with "'Adam' object is not callable"."""
    def model_fn():
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        return ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                   {'x': tf.TensorSpec([None, 4], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)})

    with pytest.raises(TypeError, match="server_optimizer_fn must be a function .* got an Adam optimizer: write"):
        ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.1),
                                             server_optimizer_fn=ft.optimizers.fed_adam(0.01))
    with pytest.raises(TypeError, match="client_optimizer_fn must be a function"):
        ft.build_federated_averaging_process(model_fn, keras.optimizers.SGD(0.1))
