"""Partitioners: every example goes to exactly one client, deterministically."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedteach.data import (
    ClientData,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_sizes,
)

labels_and_clients = st.integers(1, 12).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 9), min_size=k * 4, max_size=200).map(np.array), st.just(k)
    )
)


def assert_exact_cover(partition, num_examples):
    everything = np.concatenate(list(partition.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(num_examples))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 30), st.integers(0, 2**16))
def test_iid_covers_every_example_once_with_near_equal_sizes(num_examples, num_clients, seed):
    num_clients = min(num_clients, num_examples)
    partition = partition_iid(num_examples, num_clients, seed)
    assert_exact_cover(partition, num_examples)
    sizes = list(partition_sizes(partition).values())
    assert len(sizes) == num_clients and max(sizes) - min(sizes) <= 1
    assert sizes == [len(v) for v in partition.values()]
    assert all(np.array_equal(a, b) for a, b in zip(partition.values(), partition_iid(num_examples, num_clients, seed).values()))


@settings(max_examples=40, deadline=None)
@given(labels_and_clients, st.floats(0.05, 100.0), st.integers(0, 2**16))
def test_dirichlet_covers_every_example_once_and_is_deterministic(data, alpha, seed):
    labels, num_clients = data
    partition = partition_dirichlet(labels, num_clients, alpha, seed, min_size=0)
    assert_exact_cover(partition, len(labels))
    assert len(partition) == num_clients
    again = partition_dirichlet(labels, num_clients, alpha, seed, min_size=0)
    assert all(np.array_equal(partition[c], again[c]) for c in partition)


@settings(max_examples=40, deadline=None)
@given(labels_and_clients, st.integers(1, 4), st.integers(0, 2**16))
def test_shards_cover_every_example_once_and_are_deterministic(data, shards_per_client, seed):
    labels, num_clients = data
    partition = partition_shards(labels, num_clients, shards_per_client, seed)
    assert_exact_cover(partition, len(labels))
    again = partition_shards(labels, num_clients, shards_per_client, seed)
    assert all(np.array_equal(partition[c], again[c]) for c in partition)


def test_ids_are_zero_padded_and_sorted():
    assert list(partition_iid(2000, 1000))[-1] == 'client_999'
    assert list(partition_iid(2000, 1001))[:1] == ['client_0000']


def test_dirichlet_alpha_controls_label_skew():
    labels = np.repeat(np.arange(10), 200)

    def mean_labels_per_client(alpha):
        partition = partition_dirichlet(labels, 20, alpha, seed=3)
        return np.mean([len(np.unique(labels[idx])) for idx in partition.values()])

    assert mean_labels_per_client(0.05) < 4 < 9.5 < mean_labels_per_client(1000.0)


def test_dirichlet_gives_every_client_min_size_examples():
    labels = np.repeat(np.arange(10), 600)
    sizes = partition_sizes(partition_dirichlet(labels, 50, alpha=0.1, min_size=5))
    assert min(sizes.values()) >= 5


def test_shards_give_each_client_as_many_labels_as_shards():
    """McMahan et al.: 100 clients x 2 shards of 300 sorted MNIST-like examples."""
    labels = np.repeat(np.arange(10), 6000)
    partition = partition_shards(labels, 100, shards_per_client=2)
    assert set(partition_sizes(partition).values()) == {600}
    assert max(len(np.unique(labels[idx])) for idx in partition.values()) <= 2


def test_partition_builds_a_client_data():
    labels = np.repeat(np.arange(10), 10).astype(np.int32)
    cd = ClientData.from_partition({'label': labels}, partition_shards(labels, 10, 1))
    assert len(cd) == 10
    assert all(len(np.unique(cd.client_arrays(c)['label'])) == 1 for c in cd.client_ids)


@pytest.mark.parametrize(
    'call, message',
    [
        (lambda: partition_iid(3, 4), 'Cannot split 3 examples among 4 clients'),
        (lambda: partition_iid(3, 0), 'num_clients must be >= 1'),
        (lambda: partition_dirichlet([0, 1, 2], 2, alpha=0), 'alpha must be > 0'),
        (lambda: partition_dirichlet([0, 1, 2], 2, alpha=1, min_size=2), 'needs 4 examples'),
        (lambda: partition_dirichlet([0] * 50 + [1] * 50, 10, alpha=0.001, min_size=10, max_attempts=3),
         'Could not give each of 10 clients at least 10 examples in 3 Dirichlet draws'),
        (lambda: partition_shards([0, 1, 2], 2, shards_per_client=2), '4 shards, but there are only 3'),
        (lambda: partition_shards([0, 1, 2], 1, shards_per_client=0), 'shards_per_client must be >= 1'),
    ],
)
def test_invalid_requests_are_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()
