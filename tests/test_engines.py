"""The two round engines: same results, the right path, compiled functions reused."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft

SPEC = collections.OrderedDict([("x", tf.TensorSpec([None, 784], tf.float32)),
                                ("y", tf.TensorSpec([None, 1], tf.int32))])


@pytest.fixture(scope="module")
def clients():
    return ft.ClientData.from_arrays(ft.make_emnist_like_clients(8, [40, 33, 47, 20, 38, 41, 35, 46], seed=3))


def tutorial_preprocess(epochs=2, shuffle=True):
    def element_fn(element):
        return collections.OrderedDict([("x", tf.reshape(element["pixels"], [-1])),
                                        ("y", tf.reshape(element["label"], [1]))])

    def preprocess(dataset):
        dataset = dataset.repeat(epochs).map(element_fn)
        if shuffle:
            dataset = dataset.shuffle(100, seed=1)
        return dataset.batch(10)
    return preprocess


def linear():
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])


def cnn():
    return keras.Sequential([keras.Input((784,)), keras.layers.Reshape((28, 28, 1)),
                             keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                             keras.layers.Flatten(), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def with_batch_norm():
    """A model with non-trainable variables (BatchNormalization's moving statistics)."""
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                             keras.layers.Activation("relu"), keras.layers.Dense(10, activation="softmax")])


def process_for(build, engine="auto", **kwargs):
    def model_fn():
        keras.utils.set_random_seed(0)
        return ft.from_keras_model(build(), keras.losses.SparseCategoricalCrossentropy(), SPEC,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.05), engine=engine,
                                                **kwargs)


def run(process, data, rounds=2):
    state, history = process.initialize(), []
    for _ in range(rounds):
        state, metrics = process.next(state, data)
        history.append(dict(metrics))
    return state, history


@pytest.mark.parametrize("build,ids", [(linear, slice(0, 3)), (cnn, slice(0, 2)),
                                       # batch norm: full batches only (sizes multiples of 10)
                                       (with_batch_norm, [3, 6])])
def test_fast_and_general_agree(clients, build, ids):
    chosen = clients.client_ids[ids] if isinstance(ids, slice) else [clients.client_ids[i] for i in ids]
    data = ft.make_federated_data(clients, chosen, tutorial_preprocess(shuffle=False))
    results = {}
    for engine in ("fast", "general"):
        process = process_for(build, engine)
        results[engine] = run(process, data)
        assert process.path == engine
    (fast_state, fast_metrics), (general_state, general_metrics) = results["fast"], results["general"]
    for f, g in zip(fast_metrics, general_metrics):
        assert f["num_examples"] == g["num_examples"]
        assert f["loss"] == pytest.approx(g["loss"], rel=1e-4)
        assert f["sparse_categorical_accuracy"] == pytest.approx(g["sparse_categorical_accuracy"], abs=1e-6)
    for part in ("trainable", "non_trainable"):
        fast_weights, general_weights = getattr(fast_state.model, part), getattr(general_state.model, part)
        assert list(fast_weights) == list(general_weights)
        for name in fast_weights:
            np.testing.assert_allclose(fast_weights[name], general_weights[name], rtol=1e-4, atol=1e-5,
                                       err_msg=name)
    if build is with_batch_norm:
        assert fast_state.model.non_trainable  # the moving statistics went through the fast path


def test_a_new_mix_of_similar_clients_reuses_the_compiled_round(clients):
    process = process_for(linear, verbose=False)
    preprocess = tutorial_preprocess()
    state = process.initialize()
    state, _ = process.next(state, ft.make_federated_data(clients, clients.client_ids[:3], preprocess))
    traces = process.trace_count
    assert traces >= 1
    for ids in (clients.client_ids[3:6], clients.client_ids[5:8], clients.client_ids[1:4]):
        state, _ = process.next(state, ft.make_federated_data(clients, ids, preprocess))
        assert process.path == "fast"
    assert process.trace_count == traces


def compiled_traces():
    return sum(len(c.traces) for c in ft.rounds.fast._COMPILED.values())


def test_processes_of_one_architecture_share_the_compiled_round(clients):
    """Learning rate and mu are inputs of the shared round: a new process with other values traces nothing,
    and still trains with its own values (it agrees with the general engine, which has no shared state)."""
    data = ft.make_federated_data(clients, clients.client_ids[:3], tutorial_preprocess())
    run(process_for(linear), data, rounds=1)
    traces = compiled_traces()
    for lr, mu in ((0.3, 0.0), (0.05, 0.5)):
        def model_fn():
            keras.utils.set_random_seed(0)
            return ft.from_keras_model(linear(), keras.losses.SparseCategoricalCrossentropy(), SPEC,
                                       metrics=[keras.metrics.SparseCategoricalAccuracy()])
        results = [run(ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(lr),
                                                            engine=engine, proximal_mu=mu), data, rounds=1)
                   for engine in ("fast", "general")]
        assert compiled_traces() == traces
        (fast_state, fast_metrics), (general_state, general_metrics) = results
        assert fast_metrics[0]["loss"] == pytest.approx(general_metrics[0]["loss"], rel=1e-4)
        for name, weights in fast_state.model.trainable.items():
            np.testing.assert_allclose(weights, general_state.model.trainable[name], rtol=1e-4, atol=1e-5)


def test_the_compiled_function_cache_keeps_the_most_recently_used_architectures(clients, monkeypatch):
    """A long session of many models does not hold every compiled function: the least recently used
    architecture goes first, and a process whose entry went keeps training with it."""
    monkeypatch.setattr(ft.rounds.fast, "MAX_COMPILED", 2)  # these processes compile a trainer each
    data = ft.make_federated_data(clients, clients.client_ids[:3], tutorial_preprocess())

    def hidden(units):
        return lambda: keras.Sequential([keras.Input((784,)), keras.layers.Dense(units, activation="relu"),
                                         keras.layers.Dense(10, activation="softmax")])

    def cached(units):
        model = ft.from_keras_model(hidden(units)(), keras.losses.SparseCategoricalCrossentropy(), SPEC,
                                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
        return (ft.rounds.fast.FastTrainer, ft.rounds.fast.architecture_key(model)) in ft.rounds.fast._COMPILED

    first = process_for(hidden(3))
    run(first, data, rounds=1)
    run(process_for(hidden(4)), data, rounds=1)
    run(process_for(hidden(3)), data, rounds=1)  # used again: now the most recent
    run(process_for(hidden(5)), data, rounds=1)
    assert len(ft.rounds.fast._COMPILED) == 2
    assert cached(3) and cached(5) and not cached(4)
    _, metrics = run(first, data, rounds=1)
    assert np.isfinite(metrics[0]["loss"])


def test_architecture_key_tells_architectures_apart():
    key = lambda build, loss="sparse_categorical_crossentropy": ft.rounds.fast.architecture_key(
        ft.from_keras_model(build(), loss, SPEC, metrics=[keras.metrics.SparseCategoricalAccuracy()]))
    assert key(linear) == key(linear)  # Keras numbers the layers' names differently: same key
    assert key(linear) != key(cnn) and key(linear) != key(with_batch_norm)
    assert key(linear) != key(lambda: keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)]))
    assert key(linear) != key(linear, keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Doubled(keras.layers.Layer):  # user-defined: shared only with itself
        def call(self, x):
            return 2 * x

    custom = lambda: keras.Sequential([keras.Input((784,)), Doubled(), keras.layers.Dense(10, activation="softmax")])
    assert key(custom) != key(custom)


def test_path_reason_says_why_the_fast_engine_left_xla(clients):
    data = ft.make_federated_data(clients, clients.client_ids[:2], tutorial_preprocess(epochs=1))
    process = process_for(cnn)
    run(process, data, rounds=1)
    assert process.path == "fast"
    assert process._engine.trainer.jit_compile is False  # decided from the layers: no doomed XLA attempt
    assert process.path_reason == ("Keras model, SGD and tutorial-style client datasets; the round runs as a plain "
                                   "TensorFlow graph, not XLA-compiled: " + ft.rounds.fast.NO_XLA_FOR_CONVOLUTIONS)


def test_the_tutorials_pipeline_takes_the_fast_path(clients, capsys):
    process = process_for(linear, verbose=True)
    run(process, ft.make_federated_data(clients, clients.client_ids[:3], tutorial_preprocess()), rounds=1)
    assert process.path == "fast"
    assert "round 1: fast path" in capsys.readouterr().out


@pytest.mark.parametrize("transform", [lambda ds: ds.filter(lambda b: tf.size(b["y"]) > 0),
                                       lambda ds: ds.take(2)], ids=["filter", "take"])
def test_an_unsupported_pipeline_takes_the_general_path_and_says_why(clients, transform):
    data = [transform(ds) for ds in ft.make_federated_data(clients, clients.client_ids[:2], tutorial_preprocess())]
    process = process_for(linear)
    run(process, data, rounds=1)
    assert process.path == "general"
    assert "not a dataset from ClientData.create_tf_dataset_for_client" in process.path_reason


class LinearModel(ft.Model):
    """A hand-written model (not Keras): it takes the general path."""

    def __init__(self):
        self.w = tf.Variable(tf.zeros((784, 10)), name="w")
        self.b = tf.Variable(tf.zeros(10), name="b")
        self.total = tf.Variable(0.0, trainable=False, name="total")
        self.count = tf.Variable(0.0, trainable=False, name="count")

    trainable_variables = property(lambda self: [self.w, self.b])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self.total, self.count])
    input_spec = property(lambda self: SPEC)

    @tf.function
    def forward_pass(self, batch, training=True):
        logits = tf.matmul(batch["x"], self.w) + self.b
        labels = tf.reshape(batch["y"], [-1])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        n = tf.cast(tf.size(labels), tf.float32)
        self.total.assign_add(loss * n)
        self.count.assign_add(n)
        return ft.BatchOutput(loss=loss, predictions=logits)

    @tf.function
    def report_local_outputs(self):
        return collections.OrderedDict([("loss", self.total / self.count), ("num_examples", self.count)])

    @property
    def federated_output_computation(self):
        return _aggregate


@ft.federated_computation
def _aggregate(metrics):
    return {"loss": ft.federated_average(metrics.loss, metrics.num_examples),
            "num_examples": ft.federated_sum(metrics.num_examples)}


def test_a_custom_model_takes_the_general_path_and_reuses_its_function(clients):
    process = ft.build_federated_averaging_process(LinearModel, lambda: keras.optimizers.SGD(0.05))
    preprocess = tutorial_preprocess()
    state = process.initialize()
    losses = []
    for ids in (clients.client_ids[:3], clients.client_ids[3:6], clients.client_ids[5:8]):
        state, metrics = process.next(state, ft.make_federated_data(clients, ids, preprocess))
        losses.append(metrics["loss"])
        assert process.path == "general"
        assert "custom LinearModel" in process.path_reason
        if ids[0] == clients.client_ids[0]:
            traces = process.trace_count
    assert process.trace_count == traces
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("build", [linear, cnn], ids=["linear", "cnn"])
def test_fast_and_general_evaluation_agree(clients, build, monkeypatch):
    """Evaluation takes the fast layout for tutorial-style datasets; a plain tf.data pipeline takes the loop.
    The padding rows of the stacked examples are never read as examples, whatever they hold (here labels
    far outside the classes, which the CNN's plain graph would refuse)."""
    def garbage(shape, dtype):
        return np.full(shape, 10**6, dtype)

    monkeypatch.setattr(ft.rounds.fast, "_aligned_empty", garbage)
    preprocess = tutorial_preprocess(epochs=2, shuffle=False)
    data = [preprocess(clients.create_tf_dataset_for_client(c)) for c in clients.client_ids[:4]]
    spec = {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}

    def model_fn():
        return ft.from_keras_model(build(), keras.losses.SparseCategoricalCrossentropy(), spec,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])

    process = ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.05))
    state, _ = process.next(process.initialize(), data)
    evaluation = ft.build_federated_evaluation(model_fn)
    fast = evaluation(state.model, data)
    general = evaluation(state.model, [ds.to_tf_dataset() for ds in data])
    assert fast["num_examples"] == general["num_examples"] == 2 * sum(clients.num_examples(c) for c in
                                                                        clients.client_ids[:4])
    assert fast["loss"] == pytest.approx(general["loss"], rel=1e-5)
    assert fast["sparse_categorical_accuracy"] == pytest.approx(general["sparse_categorical_accuracy"], abs=1e-6)


def test_the_fast_engines_metrics_are_the_models_aggregation_of_their_outputs(clients, monkeypatch):
    """The fast engines sum their per-client outputs without a second type check; the metrics are exactly
    what the model's federated_output_computation makes of the same outputs."""
    seen = []

    def keep(aggregate, outputs):
        seen.append((aggregate(outputs), aggregate.of_trusted(outputs)))
        return seen[-1][1]

    monkeypatch.setattr(ft.rounds.fedavg, "aggregate_trusted", keep)
    monkeypatch.setattr(ft.evaluation, "aggregate_trusted", keep)
    def model_fn():
        return ft.from_keras_model(linear(), keras.losses.SparseCategoricalCrossentropy(), SPEC,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])

    data = ft.make_federated_data(clients, clients.client_ids[:5], tutorial_preprocess())
    process = ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.05))
    state, (metrics,) = run(process, data, rounds=1)
    evaluated = ft.build_federated_evaluation(model_fn)(state.model, data)
    assert process.path == "fast" and len(seen) == 2
    assert [dict(checked) for checked, _ in seen] == [dict(trusted) for _, trusted in seen] == [metrics, evaluated]


def test_the_rounds_examples_become_tensors_without_a_copy_where_aligned():
    """The stacked examples are handed to TensorFlow as they are (aligned memory: the tensor sees later
    writes) or copied (unaligned memory, which TensorFlow's kernels cannot take); equal either way."""
    from fedteach.rounds.fast import _aligned_empty, _tensor_sharing

    aligned = _aligned_empty((5, 3), np.float32)
    assert aligned.ctypes.data % 64 == 0
    aligned[:] = np.arange(15, dtype=np.float32).reshape(5, 3)
    unaligned = np.arange(16, dtype=np.float32)[1:].reshape(5, 3)
    assert unaligned.ctypes.data % 64
    for array, sharing in ((aligned, True), (unaligned, False)):
        tensor, shared = _tensor_sharing(array)
        np.testing.assert_array_equal(tensor.numpy(), array)
        array[0, 0] = -1.0
        assert shared == sharing and (float(tensor[0, 0]) == -1.0) == sharing


def test_a_process_reuses_its_examples_memory_and_trains_as_a_fresh_process():
    """A process writes each round's examples into the same arrays (their tensors share them); its rounds
    give exactly the metrics of processes that lay out every round afresh."""
    clients = ft.ClientData.from_arrays(ft.make_emnist_like_clients(6, [40, 50, 60, 45, 55, 35], seed=3))
    preprocess = tutorial_preprocess(epochs=2)
    spec = {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}

    def model_fn():
        return ft.from_keras_model(linear(), keras.losses.SparseCategoricalCrossentropy(), spec)

    def rounds(fresh_each_round):
        process = ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.05), seed=1)
        state, losses = process.initialize(), []
        for r, ids in enumerate([[0, 1, 2], [3, 4, 5], [1, 3, 5]]):
            if fresh_each_round:
                process._engine.layouter._buffers.clear()
            data = [preprocess(clients.create_tf_dataset_for_client(clients.client_ids[i])) for i in ids]
            state, metrics = process.next(state, data)
            losses.append(metrics["loss"])
        return process, losses

    reusing, losses = rounds(False)
    assert len(reusing._engine.layouter._buffers) >= 1
    assert losses == rounds(True)[1]
