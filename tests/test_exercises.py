"""The exercise checks accept the worked solutions and turn the notebooks' starting code away with a hint."""
import importlib.util
import pathlib

import numpy as np
import pytest
import tensorflow as tf

import fedteach as ft

spec = importlib.util.spec_from_file_location(
    "solutions", pathlib.Path(__file__).resolve().parent.parent / "solutions" / "exercises.py")
solutions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solutions)


@pytest.fixture(scope="module")
def train():
    return ft.load_offline_digits(num_clients=12, seed=0)[0]


def test_most_common_label(train):
    assert ft.exercises.check_most_common_label(solutions.most_common_label, train)
    first_label = ft.exercises.check_most_common_label(lambda cd, c: cd.client_arrays(c)["label"][0], train)
    assert not first_label and "np.bincount" in first_label.message


def test_partition_with_two_labels_per_client():
    labels = np.repeat(np.arange(10), 30)
    assert ft.exercises.check_partition(solutions.two_labels_per_client(labels, 10), labels, 10, 2)
    iid = ft.exercises.check_partition(ft.partition_iid(len(labels), 10), labels, 10, 2)
    assert not iid and "sort the examples by label" in iid.message


def test_input_spec():
    batch = {"x": np.zeros((20, 784), np.float32), "y": np.zeros((20, 1), np.int32)}
    assert ft.exercises.check_input_spec(solutions.input_spec(), batch)
    fixed = ft.exercises.check_input_spec({"x": tf.TensorSpec([20, 784], tf.float32),
                                           "y": tf.TensorSpec([20, 1], tf.int32)}, batch)
    assert not fixed and "must be None" in fixed.message


def test_client_sampling(train):
    ids = train.client_ids
    assert ft.exercises.check_client_sampling(lambda r: solutions.clients_for_round(ids, r), ids, 3)
    tutorial = ft.exercises.check_client_sampling(lambda r: ids[:3], ids, 3)
    assert not tutorial and "same clients" in tutorial.message
    unseeded = ft.exercises.check_client_sampling(lambda r: list(np.random.choice(ids, 3, replace=False)), ids, 3)
    assert not unseeded and "(seed, round_num)" in unseeded.message


def test_metric_aggregation():
    assert ft.exercises.check_metric_aggregation(solutions.aggregate_loss)

    @ft.federated_computation
    def plain_mean(metrics):
        return {"loss": ft.federated_mean(metrics.loss), "num_examples": ft.federated_sum(metrics.num_examples)}

    verdict = ft.exercises.check_metric_aggregation(plain_mean)
    assert not verdict and "should count more" in verdict.message


def test_generalization_gap():
    train_metrics, test_metrics = {"accuracy": 0.8}, {"accuracy": 0.6}
    assert ft.exercises.check_generalization_gap(
        solutions.generalization_gap(train_metrics, test_metrics), train_metrics, test_metrics)
    flipped = ft.exercises.check_generalization_gap(-0.2, train_metrics, test_metrics)
    assert not flipped and "sign is flipped" in flipped.message
    assert "set `gap`" in ft.exercises.check_generalization_gap(None, train_metrics, test_metrics).message
