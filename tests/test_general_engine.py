"""The general engine: any ft.Model, any pipeline; deterministic, and in step with the fast engine.

A client dataset with a recipe (ClientData.create_tf_dataset_for_client + repeat/map/shuffle/batch) is laid
out as the fast engine lays it out, so the tutorial's hand-written MnistModel on the general engine gives
the Keras model's metrics on the fast engine, round for round. Other pipelines run through tf.data with
their shuffles re-seeded from (seed, round, client).
"""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft
from fedteach.rounds.general import reseeded
from test_tutorial import MnistModel  # the tutorial's hand-written model, as tests/test_tutorial.py writes it

SPEC = collections.OrderedDict([("x", tf.TensorSpec([None, 784], tf.float32)),
                                ("y", tf.TensorSpec([None, 1], tf.int32))])
CLIENTS = ft.ClientData.from_arrays(ft.make_emnist_like_clients(3, [37, 30, 41], seed=4, noise=0.3))


def tutorial_data(epochs=3):
    """The tutorial's preprocess (repeat, map, shuffle without a seed, batch): the process's seed shuffles."""
    def element_fn(element):
        return collections.OrderedDict([("x", tf.reshape(element["pixels"], [-1])),
                                        ("y", tf.reshape(element["label"], [1]))])
    return [CLIENTS.create_tf_dataset_for_client(c).repeat(epochs).map(element_fn).shuffle(500).batch(20)
            for c in CLIENTS.client_ids]


def keras_model_fn():
    net = keras.Sequential([keras.Input((784,)),
                            keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
    return ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(), SPEC,
                               metrics=[keras.metrics.SparseCategoricalAccuracy()])


def sgd():
    return keras.optimizers.SGD(learning_rate=0.02)


def history(process, data_fn, rounds=3):
    state, metrics = process.initialize(), []
    for _ in range(rounds):
        state, round_metrics = process.next(state, data_fn())
        metrics.append(dict(round_metrics))
    return metrics, state


def test_the_hand_written_model_gives_the_keras_models_metrics_round_for_round():
    keras_process = ft.build_federated_averaging_process(keras_model_fn, sgd, seed=3)
    mnist_process = ft.build_federated_averaging_process(MnistModel, sgd, seed=3)
    keras_metrics, keras_state = history(keras_process, tutorial_data)
    mnist_metrics, mnist_state = history(mnist_process, tutorial_data)
    assert (keras_process.path, mnist_process.path) == ("fast", "general")
    for k, m in zip(keras_metrics, mnist_metrics):
        assert m["num_examples"] == k["num_examples"] == 3 * (37 + 30 + 41)
        assert m["loss"] == pytest.approx(k["loss"], rel=1e-5)
        assert m["accuracy"] == pytest.approx(k["sparse_categorical_accuracy"], abs=1e-5)
    np.testing.assert_allclose(mnist_state.model.trainable["weights"], keras_state.model.trainable["dense/kernel"],
                               atol=1e-5)


def test_two_runs_of_the_general_engine_give_identical_metrics_and_another_seed_does_not():
    runs = [history(ft.build_federated_averaging_process(MnistModel, sgd, seed=seed), tutorial_data)
            for seed in (7, 7, 8)]
    (first, first_state), (again, again_state), (other, _) = runs
    assert first == again
    np.testing.assert_array_equal(first_state.model.trainable["weights"], again_state.model.trainable["weights"])
    assert [m["loss"] for m in other] != [m["loss"] for m in first]


def test_a_keras_model_on_the_general_engine_follows_the_fast_engines_order():
    """With shuffling (one example order per seed and round), the engines agree to float tolerance."""
    results = {}
    for engine in ("fast", "general"):
        process = ft.build_federated_averaging_process(keras_model_fn, sgd, seed=1, engine=engine)
        results[engine] = history(process, tutorial_data, rounds=2)
        assert process.path == engine
    (fast_metrics, fast_state), (general_metrics, general_state) = results["fast"], results["general"]
    for f, g in zip(fast_metrics, general_metrics):
        assert g["loss"] == pytest.approx(f["loss"], rel=1e-5)
        assert g["sparse_categorical_accuracy"] == pytest.approx(f["sparse_categorical_accuracy"], abs=1e-5)
    np.testing.assert_allclose(general_state.model.trainable["dense/kernel"],
                               fast_state.model.trainable["dense/kernel"], atol=1e-5)


def test_the_compiled_round_is_reused_across_rounds_and_client_mixes():
    process = ft.build_federated_averaging_process(MnistModel, sgd)
    state, _ = process.next(process.initialize(), tutorial_data())
    traces = process.trace_count
    for epochs in (1, 2):
        state, metrics = process.next(state, tutorial_data(epochs)[:2])
        assert metrics["num_examples"] == epochs * (37 + 30)
    assert process.trace_count == traces


def plain_pipelines():
    """tf.data pipelines without a recipe, each with an unseeded shuffle that reshuffles every epoch."""
    datasets = []
    for c in CLIENTS.client_ids:
        arrays = CLIENTS.client_arrays(c)
        datasets.append(tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=arrays["pixels"].reshape(-1, 784), y=arrays["label"].reshape(-1, 1).astype(np.int32)))
            .shuffle(64).repeat(2).batch(16))
    return datasets


def test_an_arbitrary_pipeline_is_shuffled_by_the_process_seed():
    data = plain_pipelines()  # the same dataset objects, their shuffles created before any process
    runs = [history(ft.build_federated_averaging_process(MnistModel, sgd, seed=seed), lambda: data, rounds=2)[0]
            for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert [m["loss"] for m in runs[2]] != [m["loss"] for m in runs[0]]


def test_reseeding_keeps_a_new_order_every_epoch_and_the_seed_decides_it():
    dataset = tf.data.Dataset.range(6).shuffle(6).repeat(3)
    epochs = lambda ds: np.array([int(v) for v in ds]).reshape(3, 6).tolist()
    first = epochs(reseeded(dataset, 11))
    assert first == epochs(reseeded(dataset, 11))
    assert all(sorted(epoch) == list(range(6)) for epoch in first)
    assert len({tuple(epoch) for epoch in first}) > 1  # reshuffle_each_iteration=True is kept
    assert first != epochs(reseeded(dataset, 12))
    replayed = epochs(reseeded(tf.data.Dataset.range(6).shuffle(6, reshuffle_each_iteration=False).repeat(3), 11))
    assert replayed[0] == replayed[1] == replayed[2]


class PyFuncMetricModel(MnistModel):
    """A forward pass with an op that XLA cannot compile (a Python function computing the accuracy)."""

    @tf.function
    def forward_pass(self, batch, training=True):
        output = MnistModel.forward_pass.python_function(self, batch, training)
        tf.numpy_function(lambda p: p, [output.predictions], tf.int32)
        return output


def test_a_forward_pass_that_xla_cannot_compile_runs_as_a_plain_graph_with_the_same_metrics():
    process = ft.build_federated_averaging_process(PyFuncMetricModel, sgd, seed=2)
    plain, _ = history(process, tutorial_data, 2)
    assert process._engine.runner.jit_compile is False
    compiled, _ = history(ft.build_federated_averaging_process(MnistModel, sgd, seed=2), tutorial_data, 2)
    for p, c in zip(plain, compiled):
        assert p["loss"] == pytest.approx(c["loss"], rel=1e-5)
        assert p["num_examples"] == c["num_examples"]


def test_reseeding_reaches_pipelines_over_generators_and_variables():
    """Pipelines whose parts live in this process (a generator, a variable) are re-seeded too, and the
    rebuilt pipeline sees the variable's current value."""
    offset = tf.Variable(10, dtype=tf.int64)
    generated = tf.data.Dataset.from_generator(lambda: iter(range(8)), output_signature=tf.TensorSpec([], tf.int64))
    dataset = generated.map(lambda x: x + offset).shuffle(8)
    values = lambda ds: [int(v) for v in ds]
    assert values(reseeded(dataset, 3)) == values(reseeded(dataset, 3))
    assert sorted(values(reseeded(dataset, 3))) == list(range(10, 18))
    offset.assign(100)
    assert sorted(values(reseeded(dataset, 3))) == list(range(100, 108))
