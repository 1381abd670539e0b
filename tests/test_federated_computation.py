"""federated_computation traces once, records a type signature and runs on concrete values."""

import collections

import numpy as np
import pytest
import tensorflow as tf

import fedteach.federated as ft
from fedteach.federated import CLIENTS, SERVER, FederatedType


@ft.federated_computation
def aggregate_mnist_metrics_across_clients(metrics):
    return {
        "num_examples": ft.federated_sum(metrics.num_examples),
        "loss": ft.federated_average(metrics.loss, metrics.num_examples),
        "accuracy": ft.federated_average(metrics.accuracy, metrics.num_examples),
    }


def test_hello_world():
    assert ft.federated_computation(lambda: "Hello, World!")() == "Hello, World!"


def test_a_computation_without_parameters_is_traced_at_once():
    hello = ft.federated_computation(lambda: "Hello, World!")
    assert str(hello.type_signature) == "( -> string)"
    initialize = ft.federated_computation(lambda: ft.federated_value(collections.OrderedDict(step=np.int64(0)), SERVER))
    assert str(initialize.type_signature) == "( -> <step=int64>@SERVER)"
    assert initialize() == {"step": 0}


def test_the_tutorial_metric_aggregation():
    result = aggregate_mnist_metrics_across_clients(
        [{"num_examples": 2.0, "loss": 1.0, "accuracy": 0.5}, {"num_examples": 6.0, "loss": 3.0, "accuracy": 1.0}]
    )
    assert result == {"accuracy": 0.875, "loss": 2.5, "num_examples": 8.0}
    assert list(result) == ["accuracy", "loss", "num_examples"]
    assert all(value.dtype == np.float32 for value in result.values())
    assert str(aggregate_mnist_metrics_across_clients.type_signature) == (
        "({<accuracy=float32,loss=float32,num_examples=float32>}@CLIENTS -> "
        "<accuracy=float32@SERVER,loss=float32@SERVER,num_examples=float32@SERVER>)"
    )


def test_an_unbound_computation_has_no_type_signature_yet():
    @ft.federated_computation
    def total(values):
        return ft.federated_sum(values)

    with pytest.raises(AttributeError, match=r"total has no type signature yet.*call it once, or bind the types"):
        total.type_signature


def test_typed_computations_are_traced_at_definition():
    traced = []

    @ft.federated_computation(FederatedType(tf.float32, CLIENTS))
    def mean(values):
        traced.append(values.is_placeholder)
        return ft.federated_mean(values)

    assert str(mean.type_signature) == "({float32}@CLIENTS -> float32@SERVER)"
    assert mean([1.0, 2.0]) == 1.5
    assert traced == [True, False]


def test_several_parameters_make_a_struct_parameter_and_are_given_positionally():
    @ft.federated_computation(FederatedType(np.float32, SERVER), FederatedType(np.float32, CLIENTS))
    def shift(offset, values):
        return ft.federated_map(lambda o, v: o + v, (ft.federated_broadcast(offset), values))

    assert str(shift.type_signature) == "(<float32@SERVER,{float32}@CLIENTS> -> {float32}@CLIENTS)"
    assert shift(10.0, [1.0, 2.0]) == [11.0, 12.0]


def test_a_bare_computation_reads_lists_as_clients_and_other_values_as_server():
    @ft.federated_computation
    def scale(factor, values):
        return ft.federated_map(lambda f, v: f * v, (ft.federated_broadcast(factor), values))

    assert scale(np.float64(2.0), [np.float64(1.0), np.float64(3.0)]) == [2.0, 6.0]
    assert str(scale.type_signature) == "(<float64@SERVER,{float64}@CLIENTS> -> {float64}@CLIENTS)"


def test_the_number_of_clients_may_change_between_calls():
    assert aggregate_mnist_metrics_across_clients([{"num_examples": 1.0, "loss": 4.0, "accuracy": 0.25}]) == {
        "accuracy": 0.25, "loss": 4.0, "num_examples": 1.0
    }


def test_arguments_of_the_wrong_type_name_the_parameter_and_show_the_signature():
    with pytest.raises(TypeError) as error:
        aggregate_mnist_metrics_across_clients([{"num_examples": 1.0, "loss": "high", "accuracy": 0.5}])
    assert str(error.value) == (
        "aggregate_mnist_metrics_across_clients has the type signature "
        "({<accuracy=float32,loss=float32,num_examples=float32>}@CLIENTS -> "
        "<accuracy=float32@SERVER,loss=float32@SERVER,num_examples=float32@SERVER>); argument 'metrics' "
        "does not match its parameter type {<accuracy=float32,loss=float32,num_examples=float32>}@CLIENTS: "
        "metrics[0]['loss']: expected float32, got 'high' (str)."
    )


def test_a_server_value_for_a_clients_parameter_is_rejected():
    with pytest.raises(TypeError, match="argument 'metrics' does not match .* expected a list with one member per client"):
        aggregate_mnist_metrics_across_clients({"num_examples": 1.0, "loss": 1.0, "accuracy": 1.0})


def test_floats_are_not_silently_truncated_to_ints():
    total = ft.federated_computation(FederatedType(np.int32, CLIENTS))(lambda v: ft.federated_sum(v))
    assert total([1, 2]) == 3
    with pytest.raises(TypeError, match=r"v\[0\]: expected int32, got 1.5 \(float\)"):
        total([1.5])


def test_mapping_arguments_may_list_their_keys_in_any_order():
    per_client = [collections.OrderedDict(accuracy=0.5, num_examples=2.0, loss=1.0)]
    assert aggregate_mnist_metrics_across_clients(per_client)["num_examples"] == 2.0


def test_federated_values_can_be_passed_directly():
    values = ft.federated_value_list([1.0, 2.0])
    total = ft.federated_computation(lambda v: ft.federated_sum(v))
    assert total(values) == 3.0
    with pytest.raises(TypeError, match=r"got a federated value of type float32@SERVER"):
        total(ft.federated_value(1.0, SERVER))


def test_bind_gives_the_signature_without_running():
    ran = []

    @ft.federated_computation
    def count(metrics):
        ran.append(metrics.is_placeholder)
        return ft.federated_sum(metrics.num_examples)

    member = collections.OrderedDict(num_examples=tf.TensorSpec([], tf.int64))
    assert count.bind(FederatedType(member, CLIENTS)) is count
    assert str(count.type_signature) == "({<num_examples=int64>}@CLIENTS -> int64@SERVER)"
    assert ran == [True]
    assert count.bind(FederatedType(member, CLIENTS)) is count
    assert count([{"num_examples": np.int64(3)}, {"num_examples": np.int64(4)}]) == 7


def test_bind_refuses_other_types_once_bound():
    with pytest.raises(TypeError, match=r"already bound to \(\{<accuracy=float32.*cannot bind it to the parameter types \(\{float32\}@CLIENTS\)"):
        aggregate_mnist_metrics_across_clients.bind(FederatedType(float, CLIENTS))


def test_bind_needs_one_federated_type_per_parameter():
    total = ft.federated_computation(lambda v: ft.federated_sum(v))
    with pytest.raises(TypeError, match=r"parameter 'v' must have a federated type, got float32. Hint: place it"):
        total.bind(float)
    with pytest.raises(TypeError, match=r"cannot take 2 parameter type\(s\)"):
        total.bind(FederatedType(float, CLIENTS), FederatedType(float, CLIENTS))


def test_tracing_errors_say_which_computation_was_traced():
    with pytest.raises(ft.PlacementError) as error:
        ft.federated_computation(FederatedType(float, SERVER))(lambda v: ft.federated_sum(v))
    assert "(while tracing <lambda> with parameter types float32@SERVER)" in error.value.__notes__


def test_results_keep_their_structure_and_placements():
    @ft.federated_computation(FederatedType({"x": float}, CLIENTS))
    def summary(data):
        return collections.OrderedDict(
            total=ft.federated_sum(data.x), per_client=ft.federated_map(lambda m: m["x"] * 2, data), label="sum"
        )

    assert str(summary.type_signature) == (
        "({<x=float32>}@CLIENTS -> <total=float32@SERVER,per_client={float32}@CLIENTS,label=string>)"
    )
    assert summary([{"x": 1.0}, {"x": 2.0}]) == collections.OrderedDict(total=3.0, per_client=[2.0, 4.0], label="sum")


def test_clients_with_datasets():
    @ft.federated_computation
    def count_examples(datasets):
        return ft.federated_sum(
            ft.federated_map(lambda d: np.float32(sum(len(batch["y"]) for batch in d)), datasets, result_type=np.float32)
        )

    def dataset(n):
        return tf.data.Dataset.from_tensor_slices({"x": np.zeros((n, 4), np.float32), "y": np.zeros((n, 1), np.int32)}).batch(2)

    assert count_examples([dataset(3), dataset(5)]) == 8.0
    assert str(count_examples.type_signature) == "({<x=float32[?,4],y=int32[?,1]>*}@CLIENTS -> float32@SERVER)"
    with pytest.raises(TypeError, match=r"datasets\[0\]: expected <x=float32\[\?,4\],y=int32\[\?,1\]>\*, got .* with elements of type <x=float32\[\?,3\]"):
        count_examples([tf.data.Dataset.from_tensor_slices({"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 1), np.int32)}).batch(2)])
