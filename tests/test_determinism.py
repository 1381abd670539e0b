"""Determinism: one seed fixes initialization, client sampling and shuffling, on both engines.

Also the properties the rest of the course relies on: partitions assign every example exactly
once with the sizes they report, and a partition becomes a ClientData with those sizes.
"""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import fedteach as ft

SPEC = {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)}
DIGITS, _ = ft.load_offline_digits(num_clients=5, seed=0)
TRAIN = ft.ClientData.from_arrays({c: {k: v[:20] for k, v in DIGITS.client_arrays(c).items()}
                                   for c in DIGITS.client_ids})


def model_fn():
    # glorot_uniform (Keras' default), not zeros: the seed must fix the initial weights
    net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax")])
    return ft.from_keras_model(net, "sparse_categorical_crossentropy", SPEC, metrics=["accuracy"])


def run(seed, engine, rounds=2):
    process = ft.build_federated_averaging_process(model_fn, lambda: keras.optimizers.SGD(0.05),
                                                   seed=seed, engine=engine)
    state, history = process.initialize(), []
    initial = state.model.trainable["dense/kernel"].copy()
    for round_num in range(1, rounds + 1):
        ids = ft.sample_clients(TRAIN.client_ids, 2, round_num=round_num, seed=seed)
        # shuffle without its own seed: the process's seed decides the order
        data = ft.make_federated_data(TRAIN, ids, ft.preprocess_for_tutorial(num_epochs=1, batch_size=8))
        state, metrics = process.next(state, data)
        history.append((ids, dict(metrics)))
    assert process.path == engine
    return initial, history, state.model.trainable["dense/kernel"]


cached_run = functools.lru_cache(run)


@pytest.mark.parametrize("engine", ["fast", "general"])
def test_the_same_seed_gives_the_same_weights_clients_and_metrics(engine):
    initial, history, final = cached_run(5, engine)
    again_initial, again_history, again_final = run(5, engine)
    np.testing.assert_array_equal(initial, again_initial)
    assert history == again_history
    np.testing.assert_array_equal(final, again_final)


@pytest.mark.parametrize("engine", ["fast", "general"])
def test_a_different_seed_gives_different_weights_and_metrics(engine):
    initial, history, _ = cached_run(5, engine)
    other_initial, other_history, _ = run(6, engine)
    assert not np.array_equal(initial, other_initial)
    assert [m for _, m in history] != [m for _, m in other_history]


def test_the_seed_alone_changes_the_shuffling():
    """Same initial weights and clients, different process seed: only the batch order differs."""
    data = lambda: ft.make_federated_data(TRAIN, TRAIN.client_ids[:2],
                                          ft.preprocess_for_tutorial(num_epochs=1, batch_size=8))
    zeros = lambda: ft.from_keras_model(keras.Sequential([keras.Input((784,)), keras.layers.Dense(
        10, activation="softmax", kernel_initializer="zeros")]), "sparse_categorical_crossentropy", SPEC)
    for engine in ("fast", "general"):
        losses = []
        for seed in (1, 2):
            p = ft.build_federated_averaging_process(zeros, lambda: keras.optimizers.SGD(0.05), seed=seed,
                                                     engine=engine)
            losses.append(p.next(p.initialize(), data())[1]["loss"])
        assert losses[0] != losses[1], engine  # (same seed, same loss: the test above)


def test_client_sampling_depends_only_on_seed_and_round():
    ids = [f"writer_{i}" for i in range(50)]
    assert ft.sample_clients(ids, 5, round_num=3, seed=1) == ft.sample_clients(ids, 5, round_num=3, seed=1)
    assert ft.sample_clients(ids, 5, round_num=3, seed=1) != ft.sample_clients(ids, 5, round_num=4, seed=1)
    assert ft.sample_clients(ids, 5, round_num=3, seed=1) != ft.sample_clients(ids, 5, round_num=3, seed=2)


labels_and_clients = st.integers(1, 8).flatmap(lambda k: st.tuples(
    st.lists(st.integers(0, 9), min_size=k * 4, max_size=120).map(lambda v: np.array(v, np.int32)), st.just(k)))


@settings(max_examples=25, deadline=None)
@given(labels_and_clients, st.sampled_from(["iid", "dirichlet", "shards"]), st.integers(0, 2**16))
def test_every_partition_assigns_each_example_once_with_the_sizes_it_reports(data, kind, seed):
    labels, num_clients = data
    partition = {"iid": lambda: ft.partition_iid(len(labels), num_clients, seed),
                 "dirichlet": lambda: ft.partition_dirichlet(labels, num_clients, 0.5, seed, min_size=0),
                 "shards": lambda: ft.partition_shards(labels, num_clients, 2, seed)}[kind]()
    everything = np.concatenate(list(partition.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
    sizes = ft.partition_sizes(partition)
    assert sizes == {c: len(v) for c, v in partition.items()} and sum(sizes.values()) == len(labels)
    client_data = ft.ClientData.from_partition({"label": labels}, partition)
    assert {c: client_data.num_examples(c) for c in client_data.client_ids} == sizes
    for c in client_data.client_ids:
        np.testing.assert_array_equal(client_data.client_arrays(c)["label"], labels[partition[c]])
