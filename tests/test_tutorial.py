"""The tutorial "Federated Learning for Image Classification", top to bottom, in fedteach.

It runs on a small file that the test writes in federated EMNIST's HDF5 layout
and checks each step against the tutorial's notation and against an
independent NumPy implementation of Federated Averaging (tests/numpy_fedavg.py).
"""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft
import numpy_fedavg

NUM_CLIENTS = 3
NUM_EPOCHS = 10
BATCH_SIZE = 20


@pytest.fixture(scope="module")
def emnist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emnist")
    sizes = [93, 88, 94, 40, 35]
    ft.write_emnist_h5(folder / "train.h5", ft.make_emnist_like_clients(5, sizes, seed=1, noise=0.35))
    ft.write_emnist_h5(folder / "test.h5", ft.make_emnist_like_clients(5, [11, 12, 10, 5, 5], seed=2, noise=0.35))
    return ft.ClientData.from_h5(folder / "train.h5"), ft.ClientData.from_h5(folder / "test.h5")


def preprocess(dataset, shuffle=True):
    """The tutorial's preprocessing, written the tutorial's way."""
    def element_fn(element):
        return collections.OrderedDict([
            ("x", tf.reshape(element["pixels"], [-1])),
            ("y", tf.reshape(element["label"], [1])),
        ])
    dataset = dataset.repeat(NUM_EPOCHS).map(element_fn)
    if shuffle:
        dataset = dataset.shuffle(500, seed=7)
    return dataset.batch(BATCH_SIZE)


def make_federated_data(client_data, client_ids, shuffle=True):
    return [preprocess(client_data.create_tf_dataset_for_client(x), shuffle) for x in client_ids]


def create_compiled_keras_model():
    model = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
    ])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(),
                  optimizer=keras.optimizers.SGD(learning_rate=0.02),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return model


# --- The hand-written model, in TF 2 style -------------------------------------------

MnistVariables = collections.namedtuple("MnistVariables", "weights bias num_examples loss_sum accuracy_sum")


def create_mnist_variables():
    return MnistVariables(
        weights=tf.Variable(tf.zeros((784, 10)), name="weights", trainable=True),
        bias=tf.Variable(tf.zeros(10), name="bias", trainable=True),
        num_examples=tf.Variable(0.0, name="num_examples", trainable=False),
        loss_sum=tf.Variable(0.0, name="loss_sum", trainable=False),
        accuracy_sum=tf.Variable(0.0, name="accuracy_sum", trainable=False))


def mnist_forward_pass(variables, batch):
    y = tf.nn.softmax(tf.matmul(batch["x"], variables.weights) + variables.bias)
    predictions = tf.cast(tf.argmax(y, 1), tf.int32)
    flat_labels = tf.reshape(batch["y"], [-1])
    loss = -tf.reduce_mean(tf.reduce_sum(tf.one_hot(flat_labels, 10) * tf.math.log(y), axis=[1]))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, flat_labels), tf.float32))
    num_examples = tf.cast(tf.size(batch["y"]), tf.float32)
    variables.num_examples.assign_add(num_examples)
    variables.loss_sum.assign_add(loss * num_examples)
    variables.accuracy_sum.assign_add(accuracy * num_examples)
    return loss, predictions


def get_local_mnist_metrics(variables):
    return collections.OrderedDict([
        ("num_examples", variables.num_examples),
        ("loss", variables.loss_sum / variables.num_examples),
        ("accuracy", variables.accuracy_sum / variables.num_examples),
    ])


@ft.federated_computation
def aggregate_mnist_metrics_across_clients(metrics):
    return {
        "num_examples": ft.federated_sum(metrics.num_examples),
        "loss": ft.federated_average(metrics.loss, metrics.num_examples),
        "accuracy": ft.federated_average(metrics.accuracy, metrics.num_examples),
    }


class MnistModel(ft.Model):
    def __init__(self):
        self._variables = create_mnist_variables()

    @property
    def trainable_variables(self):
        return [self._variables.weights, self._variables.bias]

    @property
    def non_trainable_variables(self):
        return []

    @property
    def local_variables(self):
        return [self._variables.num_examples, self._variables.loss_sum, self._variables.accuracy_sum]

    @property
    def input_spec(self):
        return collections.OrderedDict([("x", tf.TensorSpec([None, 784], tf.float32)),
                                        ("y", tf.TensorSpec([None, 1], tf.int32))])

    @tf.function
    def forward_pass(self, batch, training=True):
        loss, predictions = mnist_forward_pass(self._variables, batch)
        return ft.BatchOutput(loss=loss, predictions=predictions)

    @tf.function
    def report_local_outputs(self):
        return get_local_mnist_metrics(self._variables)

    @property
    def federated_output_computation(self):
        return aggregate_mnist_metrics_across_clients


def sgd():
    return keras.optimizers.SGD(learning_rate=0.02)


# --- The tutorial -----------------------------------------------------------------------

def test_the_data_is_keyed_by_writer(emnist):
    emnist_train, _ = emnist
    assert len(emnist_train.client_ids) == 5
    assert emnist_train.element_spec == {"label": tf.TensorSpec([], tf.int32),
                                         "pixels": tf.TensorSpec([28, 28], tf.float32)}
    example_element = next(iter(emnist_train.create_tf_dataset_for_client(emnist_train.client_ids[0])))
    raw = emnist_train.client_arrays(emnist_train.client_ids[0])
    assert example_element["label"].numpy() == raw["label"][0]
    assert example_element["pixels"].shape == (28, 28)


def test_preprocessing_flattens_and_batches(emnist):
    emnist_train, _ = emnist
    sample_batch = next(iter(preprocess(emnist_train.create_tf_dataset_for_client(emnist_train.client_ids[0]))))
    assert sample_batch["x"].shape == (20, 784) and sample_batch["x"].dtype == tf.float32
    assert sample_batch["y"].shape == (20, 1) and sample_batch["y"].dtype == tf.int32


def test_federated_data_is_a_list_of_client_datasets(emnist):
    emnist_train, _ = emnist
    federated_train_data = make_federated_data(emnist_train, emnist_train.client_ids[:NUM_CLIENTS])
    assert len(federated_train_data) == 3
    assert federated_train_data[0].element_spec == {"x": tf.TensorSpec([None, 784], tf.float32),
                                                    "y": tf.TensorSpec([None, 1], tf.int32)}


def test_ten_rounds_with_the_keras_model_and_the_type_signatures(emnist):
    emnist_train, _ = emnist
    federated_train_data = make_federated_data(emnist_train, emnist_train.client_ids[:NUM_CLIENTS])
    sample_batch = next(iter(federated_train_data[0]))

    def model_fn():
        return ft.from_compiled_keras_model(create_compiled_keras_model(), sample_batch)

    iterative_process = ft.build_federated_averaging_process(model_fn)
    assert str(iterative_process.initialize.type_signature) == (
        "( -> <model=<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,"
        "non_trainable=<>>,optimizer_state=<int64>>@SERVER)")
    assert str(iterative_process.next.type_signature) == (
        "(<<model=<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,non_trainable=<>>,"
        "optimizer_state=<int64>>@SERVER,{<x=float32[?,784],y=int32[?,1]>*}@CLIENTS> -> "
        "<<model=<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,non_trainable=<>>,"
        "optimizer_state=<int64>>@SERVER,<sparse_categorical_accuracy=float32@SERVER,loss=float32@SERVER,"
        "num_examples=int64@SERVER>>)")
    state = iterative_process.initialize()
    losses = []
    for _ in range(10):
        state, metrics = iterative_process.next(state, federated_train_data)
        losses.append(metrics["loss"])
    assert str(metrics).startswith("<sparse_categorical_accuracy=")
    assert metrics.num_examples == (93 + 88 + 94) * NUM_EPOCHS
    assert losses[-1] < 0.5 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert state.round_num == 10


def test_training_loss_equals_a_numpy_fedavg(emnist):
    emnist_train, _ = emnist
    ids = emnist_train.client_ids[:NUM_CLIENTS]
    reference, _ = numpy_fedavg.fedavg(
        [(emnist_train.client_arrays(c)["pixels"].reshape(-1, 784), emnist_train.client_arrays(c)["label"])
         for c in ids], rounds=10)
    for engine in ("fast", "general"):
        data = make_federated_data(emnist_train, ids, shuffle=False)
        sample_batch = next(iter(data[0]))
        process = ft.build_federated_averaging_process(
            lambda: ft.from_compiled_keras_model(create_compiled_keras_model(), sample_batch), engine=engine)
        state = process.initialize()
        losses, accuracies = [], []
        for _ in range(10):
            state, metrics = process.next(state, data)
            losses.append(metrics["loss"])
            accuracies.append(metrics["sparse_categorical_accuracy"])
        assert process.path == engine
        ref_loss = np.array([r[0] for r in reference])
        assert losses[0] == pytest.approx(ref_loss[0], rel=1e-4), engine
        np.testing.assert_allclose(losses, ref_loss, rtol=0.02, err_msg=engine)
        np.testing.assert_allclose(accuracies, [r[1] for r in reference], atol=0.02, err_msg=engine)


def test_the_hand_written_model_gives_the_keras_models_metrics(emnist):
    emnist_train, _ = emnist
    data = make_federated_data(emnist_train, emnist_train.client_ids[:NUM_CLIENTS], shuffle=False)
    sample_batch = next(iter(data[0]))
    keras_process = ft.build_federated_averaging_process(
        lambda: ft.from_compiled_keras_model(create_compiled_keras_model(), sample_batch))
    mnist_process = ft.build_federated_averaging_process(MnistModel, client_optimizer_fn=sgd)
    assert str(mnist_process.initialize.type_signature) == (
        "( -> <model=<trainable=<weights=float32[784,10],bias=float32[10]>,non_trainable=<>>,"
        "optimizer_state=<int64>>@SERVER)")
    keras_state, mnist_state = keras_process.initialize(), mnist_process.initialize()
    for _ in range(3):
        keras_state, keras_metrics = keras_process.next(keras_state, data)
        mnist_state, mnist_metrics = mnist_process.next(mnist_state, data)
        assert mnist_process.path == "general"
        assert str(mnist_metrics).startswith("<accuracy=")
        assert mnist_metrics["loss"] == pytest.approx(keras_metrics["loss"], rel=1e-4)
        assert mnist_metrics["accuracy"] == pytest.approx(keras_metrics["sparse_categorical_accuracy"], abs=1e-5)
        assert mnist_metrics["num_examples"] == keras_metrics["num_examples"]


def test_federated_evaluation_on_train_and_test_clients(emnist):
    emnist_train, emnist_test = emnist
    ids = emnist_train.client_ids[:NUM_CLIENTS]
    data = make_federated_data(emnist_train, ids, shuffle=False)
    process = ft.build_federated_averaging_process(MnistModel, client_optimizer_fn=sgd)
    state = process.initialize()
    for _ in range(5):
        state, _ = process.next(state, data)

    evaluation = ft.build_federated_evaluation(MnistModel)
    assert str(evaluation.type_signature) == (
        "(<<trainable=<weights=float32[784,10],bias=float32[10]>,non_trainable=<>>@SERVER,"
        "{<x=float32[?,784],y=int32[?,1]>*}@CLIENTS> -> "
        "<accuracy=float32@SERVER,loss=float32@SERVER,num_examples=float32@SERVER>)")
    w, b = state.model.trainable["weights"].astype(np.float64), state.model.trainable["bias"].astype(np.float64)
    for client_data, expected_n in ((emnist_train, 275 * NUM_EPOCHS), (emnist_test, 33 * NUM_EPOCHS)):
        metrics = evaluation(state.model, make_federated_data(client_data, ids, shuffle=False))
        ref_loss, ref_accuracy = numpy_fedavg.evaluate(w, b, [
            (client_data.client_arrays(c)["pixels"].reshape(-1, 784), client_data.client_arrays(c)["label"])
            for c in ids])
        assert metrics["num_examples"] == expected_n
        assert metrics["loss"] == pytest.approx(ref_loss, rel=1e-4)
        assert metrics["accuracy"] == pytest.approx(ref_accuracy, abs=1e-6)
        assert str(metrics).startswith("<accuracy=")


def test_centralized_evaluation_in_keras(emnist):
    emnist_train, emnist_test = emnist
    ids = emnist_train.client_ids[:NUM_CLIENTS]
    data = make_federated_data(emnist_train, ids)
    sample_batch = next(iter(data[0]))
    process = ft.build_federated_averaging_process(
        lambda: ft.from_compiled_keras_model(create_compiled_keras_model(), sample_batch))
    state = process.initialize()
    for _ in range(3):
        state, _ = process.next(state, data)
    keras_model = create_compiled_keras_model()
    ft.assign_weights_to_keras_model(keras_model, state.model)
    x = np.concatenate([emnist_test.client_arrays(c)["pixels"].reshape(-1, 784) for c in emnist_test.client_ids])
    y = np.concatenate([emnist_test.client_arrays(c)["label"] for c in emnist_test.client_ids])
    loss, accuracy = keras_model.evaluate(x, y, verbose=0)
    ref_loss, ref_accuracy = numpy_fedavg.evaluate(
        state.model.trainable["dense/kernel"].astype(np.float64),
        state.model.trainable["dense/bias"].astype(np.float64), [(x, y)])
    assert loss == pytest.approx(ref_loss, rel=1e-4)
    assert accuracy == pytest.approx(ref_accuracy, abs=1e-6)


def test_same_seed_same_metrics_round_for_round(emnist):
    emnist_train, _ = emnist
    ids = emnist_train.client_ids[:NUM_CLIENTS]

    def run(seed, engine):
        data = make_federated_data(emnist_train, ids)
        sample_batch = next(iter(data[0]))
        process = ft.build_federated_averaging_process(
            lambda: ft.from_compiled_keras_model(create_compiled_keras_model(), sample_batch),
            seed=seed, engine=engine)
        state, history = process.initialize(), []
        for _ in range(3):
            state, metrics = process.next(state, make_federated_data(emnist_train, ids))
            history.append(dict(metrics))
        return history

    for engine in ("fast", "general"):
        assert run(0, engine) == run(0, engine)
    assert run(0, "fast") != run(1, "fast")
