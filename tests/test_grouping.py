"""Rounds in bounded memory: a round too large for the memory budget runs its clients in groups, same result."""
import mmap
import os

import keras
import numpy as np
import pytest

import fedteach as ft
from fedteach.data.client_data import release_mapped_pages
from fedteach.rounds import grouping
from test_engines import SPEC, cnn, linear, tutorial_preprocess
from test_engines import run as rounds

SIZES = [40, 33, 47, 20, 38, 41, 35, 46]


@pytest.fixture(scope="module")
def data():
    clients = ft.ClientData.from_arrays(ft.make_emnist_like_clients(8, SIZES, seed=3))
    return ft.make_federated_data(clients, clients.client_ids, tutorial_preprocess(epochs=2))


def build(kind=ft.build_federated_averaging_process, net=linear, **kwargs):
    def model_fn():
        keras.utils.set_random_seed(0)
        return ft.from_keras_model(net(), keras.losses.SparseCategoricalCrossentropy(), SPEC,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])
    if kind is ft.build_federated_sgd_process:
        return kind(model_fn, **kwargs)
    return kind(model_fn, lambda: keras.optimizers.SGD(0.05), **kwargs)


def assert_same(a, b):
    (state_a, history_a), (state_b, history_b) = a, b
    for k, v in state_a.model.trainable.items():
        np.testing.assert_allclose(state_b.model.trainable[k], v, atol=2e-6)
    for ma, mb in zip(history_a, history_b):
        assert ma.keys() == mb.keys()
        for k in ma:
            np.testing.assert_allclose(mb[k], ma[k], rtol=1e-5, err_msg=k)


def test_plan_groups_clients_of_similar_size_in_groups_that_fit():
    row_bytes, client_bytes = 6280, 167_000
    split = grouping.plan(SIZES, row_bytes, client_bytes, budget_bytes=1.5 * 2**20)
    assert split.clients == 2 and len(split.groups) == 4
    assert [sorted(SIZES[i] for i in g) for g in split.groups] == [[20, 33], [35, 38], [40, 41], [46, 47]]
    assert sorted(np.concatenate(split.groups).tolist()) == list(range(8))  # every client once
    for group in split.groups:  # each group fits, padded to the plan's shape
        assert split.rows * row_bytes + split.clients * client_bytes <= 1.5 * 2**20
        assert sum(SIZES[i] for i in group) <= split.rows
    assert grouping.plan(SIZES, row_bytes, client_bytes, budget_bytes=2**30) is None  # all fit: one group


@pytest.mark.parametrize("budget_mb", [0.6, 1.5, 2.0])  # groups of 1, 2 and 3 clients (the last one padded)
def test_a_grouped_round_equals_the_round_in_one_group(data, budget_mb):
    split = grouping.plan(SIZES, 6280, 167_000, budget_mb * 2**20)
    assert split is not None and len(split.groups) > 1
    assert_same(rounds(build(), data), rounds(build(memory_budget_mb=budget_mb), data))


def test_groups_share_one_compiled_function_across_groups_and_rounds(data):
    process = build(memory_budget_mb=1.5)
    state, _ = process.next(process.initialize(), data)
    traces = process.trace_count
    for _ in range(2):
        state, _ = process.next(state, data)
    assert process.trace_count == traces
    assert process.path == "fast"


def test_grouping_keeps_aggregators_fedsgd_and_fedprox_exact(data):
    clip = dict(aggregator=ft.aggregators.chain(ft.aggregators.clip(0.5), ft.aggregators.unweighted_mean()))
    assert_same(rounds(build(**clip), data), rounds(build(memory_budget_mb=1.5, **clip), data))
    sgd = ft.build_federated_sgd_process
    assert_same(rounds(build(sgd), data), rounds(build(sgd, memory_budget_mb=1.5), data))
    prox = ft.build_fedprox_process
    assert_same(rounds(build(prox, mu=0.1), data), rounds(build(prox, mu=0.1, memory_budget_mb=1.5), data))


def test_a_grouped_scaffold_round_equals_the_round_in_one_group(data):
    """SCAFFOLD's corrections are sliced group by group; its control variates come out the same."""
    scaffold = ft.build_scaffold_process
    whole = rounds(build(scaffold, total_clients=8), data)
    grouped = rounds(build(scaffold, total_clients=8, memory_budget_mb=1.5), data)
    assert_same(whole, grouped)
    for k, v in whole[0].control.items():
        np.testing.assert_allclose(grouped[0].control[k], v, atol=2e-6)
    for client, controls in whole[0].client_controls.items():
        for k, v in controls.items():
            np.testing.assert_allclose(grouped[0].client_controls[client][k], v, atol=2e-6)


def test_grouping_works_for_a_cnn(data):
    assert_same(rounds(build(net=cnn), data, rounds=1), rounds(build(net=cnn, memory_budget_mb=2.0), data, rounds=1))


def test_an_empty_client_in_a_grouped_round_is_skipped_with_a_warning(data):
    clients = ft.ClientData.from_arrays(ft.make_emnist_like_clients(4, [30, 0, 25, 28], seed=1))
    with_empty = ft.make_federated_data(clients, clients.client_ids, tutorial_preprocess(epochs=1))
    process = build(memory_budget_mb=0.6)
    with pytest.warns(UserWarning, match="skipped 1 client"):
        _, metrics = process.next(process.initialize(), with_empty)
    assert metrics["num_examples"] == 83


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError, match="memory_budget_mb must be a positive number"):
        build(memory_budget_mb=0)


def resident_file_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:")) / 1024


def test_released_pages_of_a_memory_map_leave_resident_memory(tmp_path):
    path = os.path.join(tmp_path, "big.npy")
    np.save(path, np.arange(16 * 2**20 // 4, dtype=np.float32))  # 64 MiB
    mapped = np.load(path, mmap_mode="r")
    before = resident_file_mib()
    total = float(mapped[::1024].sum())  # touches every page
    grown = resident_file_mib() - before  # (how much of it the kernel counts depends on its page cache)
    assert grown > 8
    release_mapped_pages([mapped[: len(mapped) // 2], mapped[len(mapped) // 2:]])
    assert resident_file_mib() - before < 0.2 * grown
    assert float(mapped[::1024].sum()) == total  # the data is read again from the file
    assert isinstance(mapped._mmap, mmap.mmap)
