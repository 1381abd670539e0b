"""Intrinsics combine federated values: placements are checked, results follow numpy."""

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedteach.federated as ft
from fedteach.federated import CLIENTS, SERVER, FederatedType, FederatedValue, PlacementError


def clients(*members):
    return ft.federated_value_list(list(members))


def test_federated_value_places_one_value_at_either_placement():
    on_server = ft.federated_value(np.arange(3.0), SERVER)
    on_clients = ft.federated_value(0.5, CLIENTS)
    assert str(on_server.type) == "float64[3]@SERVER"
    assert str(on_clients.type) == "float32@CLIENTS"
    np.testing.assert_array_equal(on_server.value, [0.0, 1.0, 2.0])


def test_broadcast_moves_a_server_value_to_all_clients():
    broadcast = ft.federated_broadcast(ft.federated_value({"w": 1.0}, SERVER))
    assert str(broadcast.type) == "<w=float32>@CLIENTS"
    assert broadcast.value == {"w": np.float32(1.0)}


def test_map_applies_the_function_to_each_client_member():
    doubled = ft.federated_map(lambda m: {"twice": m["x"] * 2}, clients({"x": 1.0}, {"x": 4.0}))
    assert str(doubled.type) == "{<twice=float32>}@CLIENTS"
    assert doubled.value == [{"twice": 2.0}, {"twice": 8.0}]


def test_map_over_a_broadcast_and_per_client_values_zips_them():
    weights = ft.federated_broadcast(ft.federated_value(10.0, SERVER))
    result = ft.federated_map(lambda w, x: w + x, (weights, clients(1.0, 2.0)))
    assert str(result.type) == "{float32}@CLIENTS"
    assert result.value == [11.0, 12.0]


def test_map_at_the_server_stays_at_the_server():
    result = ft.federated_map(lambda x: x + 1, ft.federated_value(np.int64(1), SERVER))
    assert str(result.type) == "int64@SERVER"
    assert result.value == 2


def test_map_with_a_result_type_converts_results_to_it():
    result = ft.federated_map(lambda x: x * 2, clients(1.0, 2.0), result_type=np.float64)
    assert str(result.type) == "{float64}@CLIENTS"
    assert [v.dtype for v in result.value] == [np.float64, np.float64]


def test_map_rejects_clients_returning_different_types():
    with pytest.raises(TypeError, match="client 0 has float32 and client 1 has string"):
        ft.federated_map(lambda x: 1.0 if x < 2 else "big", clients(1.0, 2.0))


def test_map_over_values_at_different_placements_is_a_placement_error():
    with pytest.raises(PlacementError, match="federated_map expects all its values at one placement"):
        ft.federated_map(lambda a, b: a, (ft.federated_value(1.0, SERVER), clients(1.0)))


def test_sum_adds_client_members_leafwise_onto_the_server():
    total = ft.federated_sum(clients({"n": 2, "v": np.ones(2, np.float32)}, {"n": 3, "v": np.full(2, 2, np.float32)}))
    assert str(total.type) == "<n=int32,v=float32[2]>@SERVER"
    assert total.value["n"] == 5 and total.value["n"].dtype == np.int32
    np.testing.assert_array_equal(total.value["v"], [3.0, 3.0])
    assert total.value["v"].dtype == np.float32


def test_mean_keeps_the_member_dtype_and_container():
    Metrics = collections.namedtuple("Metrics", ["loss", "accuracy"])
    mean = ft.federated_mean(clients(Metrics(1.0, 0.0), Metrics(3.0, 1.0)))
    assert mean.value == Metrics(np.float32(2.0), np.float32(0.5))
    assert isinstance(mean.value, Metrics) and mean.value.loss.dtype == np.float32


def test_federated_average_is_the_tutorial_name_for_federated_mean():
    assert ft.federated_average is ft.federated_mean


@pytest.mark.parametrize(
    "intrinsic, call",
    [
        ("federated_sum", lambda v: ft.federated_sum(v)),
        ("federated_mean", lambda v: ft.federated_mean(v)),
    ],
)
def test_aggregating_a_server_value_names_the_intrinsic_and_both_placements(intrinsic, call):
    with pytest.raises(PlacementError, match=f"^{intrinsic} expects a value placed at CLIENTS, got float32@SERVER. Hint: "):
        call(ft.federated_value(1.0, SERVER))


def test_broadcasting_a_clients_value_is_a_placement_error():
    with pytest.raises(PlacementError, match=r"federated_broadcast expects a value placed at SERVER, got \{float32\}@CLIENTS"):
        ft.federated_broadcast(clients(1.0))


def test_placement_error_is_a_type_error():
    assert issubclass(PlacementError, TypeError)


def test_non_federated_inputs_are_a_clear_type_error():
    with pytest.raises(TypeError, match=r"federated_sum expects a federated value, got \[1.0, 2.0\] \(list\)"):
        ft.federated_sum([1.0, 2.0])


def test_aggregates_refuse_non_numeric_members():
    with pytest.raises(TypeError, match="federated_mean expects floating-point members, got int32"):
        ft.federated_mean(clients(1, 2))
    with pytest.raises(TypeError, match="federated_sum expects numeric members, got string"):
        ft.federated_sum(clients("a", "b"))


def test_aggregates_over_no_clients_raise():
    nobody = FederatedValue(FederatedType(float, CLIENTS), [])
    with pytest.raises(ValueError, match="federated_sum got no clients"):
        ft.federated_sum(nobody)
    with pytest.raises(ValueError, match="federated_mean got no clients"):
        ft.federated_mean(nobody)


def test_mean_with_zero_total_weight_raises_instead_of_returning_nan():
    with pytest.raises(ValueError, match="weights with a finite, non-zero total, got a total of 0.0"):
        ft.federated_mean(clients(1.0, 2.0), clients(0.0, 0.0))


def test_mean_needs_one_weight_per_client():
    with pytest.raises(ValueError, match="got 2 client values but 3 weights"):
        ft.federated_mean(clients(1.0, 2.0), clients(1.0, 1.0, 1.0))


def test_aggregating_a_broadcast_value_cannot_count_the_clients():
    broadcast = ft.federated_broadcast(ft.federated_value(1.0, SERVER))
    with pytest.raises(ValueError, match="cannot tell how many clients"):
        ft.federated_sum(broadcast)


def test_placeholders_give_result_types_without_values():
    metrics = FederatedValue.placeholder(FederatedType({"loss": float, "n": float}, CLIENTS))
    mean = ft.federated_mean(metrics.loss, metrics.n)
    assert str(mean.type) == "float32@SERVER" and mean.is_placeholder
    mapped = ft.federated_map(lambda m: m["n"] > 0, metrics)
    assert str(mapped.type) == "{bool}@CLIENTS"
    with pytest.raises(ValueError, match="placeholder used while tracing"):
        mean.value


def test_elements_are_reached_by_attribute_or_key_at_the_same_placement():
    metrics = clients(collections.OrderedDict(num_examples=2.0, loss=1.0), collections.OrderedDict(num_examples=4.0, loss=0.5))
    assert str(metrics.num_examples.type) == "{float32}@CLIENTS"
    assert metrics["loss"].value == [1.0, 0.5]
    assert metrics[0].value == [2.0, 4.0]
    server = ft.federated_value({"lr": 0.1}, SERVER)
    assert str(server.lr.type) == "float32@SERVER"


def test_unknown_elements_list_the_available_names():
    metrics = clients({"loss": 1.0, "num_examples": 2.0})
    with pytest.raises(AttributeError, match="no element 'accuracy'; available: 'loss', 'num_examples'"):
        metrics.accuracy
    with pytest.raises(KeyError, match="no element 'accuracy'; available: 'loss', 'num_examples'"):
        metrics["accuracy"]
    with pytest.raises(AttributeError, match="available: none"):
        clients(1.0).loss


def test_federated_values_check_their_members_against_the_type():
    with pytest.raises(TypeError, match=r"value\[1\]\['loss'\]: expected float32, got 'x' \(str\)"):
        FederatedValue(FederatedType({"loss": float}, CLIENTS), [{"loss": 1.0}, {"loss": "x"}])
    with pytest.raises(TypeError, match="expected a list with one member per client"):
        FederatedValue(FederatedType(float, CLIENTS), 1.0)


floats = st.floats(-1e6, 1e6, allow_nan=False)
client_arrays = st.integers(1, 4).flatmap(
    lambda size: st.lists(hnp.arrays(np.float64, (size,), elements=floats), min_size=1, max_size=8)
)


@settings(max_examples=50, deadline=None)
@given(client_arrays)
def test_sum_matches_numpy(members):
    total = ft.federated_sum(clients(*[{"a": m, "b": m[0]} for m in members])).value
    np.testing.assert_allclose(total["a"], np.sum(members, axis=0), rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(total["b"], np.sum([m[0] for m in members]), rtol=1e-12, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(client_arrays.flatmap(lambda ms: st.tuples(st.just(ms), st.lists(st.floats(0.01, 1e3), min_size=len(ms), max_size=len(ms)))))
def test_weighted_mean_matches_numpy_average(members_and_weights):
    members, weights = members_and_weights
    # Python floats would be float32 weights; float64 weights keep the comparison exact.
    mean = ft.federated_mean(clients(*members), clients(*np.float64(weights))).value
    np.testing.assert_allclose(mean, np.average(members, axis=0, weights=weights), rtol=1e-9, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8))
def test_float32_mean_stays_float32_and_is_close_to_the_exact_mean(values):
    mean = ft.federated_mean(clients(*values)).value
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, np.mean(np.float32(values), dtype=np.float64), rtol=1e-6, atol=1e-4)
