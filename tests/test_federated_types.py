"""Federated types print in the notation of the TFF tutorials and convert from Python/TF objects."""

import collections
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import fedteach.federated as ft
from fedteach.federated import CLIENTS, SERVER, FederatedType, FunctionType, SequenceType, StructType, TensorType


def test_placements_print_their_names():
    assert (str(ft.SERVER), str(ft.CLIENTS)) == ("SERVER", "CLIENTS")


@pytest.mark.parametrize(
    "type_spec, expected",
    [
        (TensorType(tf.float32, [784, 10]), "float32[784,10]"),
        (TensorType(tf.int32, [None, 1]), "int32[?,1]"),
        (TensorType(tf.int64), "int64"),
        (TensorType(np.float32), "float32"),
        (StructType([("a", tf.float32), ("b", tf.int32)]), "<a=float32,b=int32>"),
        (StructType([(None, tf.int64)]), "<int64>"),
        (StructType([]), "<>"),
        (StructType([("outer", StructType([("inner", float)])), (None, int)]), "<outer=<inner=float32>,int32>"),
        (
            SequenceType(collections.OrderedDict(x=(tf.float32, [None, 784]), y=(tf.int32, [None, 1]))),
            "<x=float32[?,784],y=int32[?,1]>*",
        ),
        (FederatedType(tf.float32, SERVER), "float32@SERVER"),
        (FederatedType(tf.float32, CLIENTS), "{float32}@CLIENTS"),
        (FederatedType(tf.float32, CLIENTS, all_equal=True), "float32@CLIENTS"),
        (FederatedType(np.float32, SERVER, all_equal=False), "{float32}@SERVER"),
    ],
)
def test_types_print_in_tff_notation(type_spec, expected):
    assert str(type_spec) == expected


def test_function_type_without_parameter_has_a_space_after_the_parenthesis():
    model = collections.OrderedDict(
        model=collections.OrderedDict(
            trainable=collections.OrderedDict([("dense/kernel", (tf.float32, [784, 10])), ("dense/bias", (tf.float32, [10]))]),
            non_trainable=collections.OrderedDict(),
        ),
        optimizer_state=(tf.int64,),
    )
    assert str(FunctionType(None, FederatedType(model, SERVER))) == (
        "( -> <model=<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,"
        "non_trainable=<>>,optimizer_state=<int64>>@SERVER)"
    )


def test_function_type_with_several_parameters_prints_them_as_a_struct():
    model = collections.OrderedDict(
        trainable=collections.OrderedDict(weights=(tf.float32, [784, 10]), bias=(tf.float32, [10])),
        non_trainable=collections.OrderedDict(),
    )
    batches = collections.OrderedDict(x=tf.TensorSpec([None, 784], tf.float32), y=tf.TensorSpec([None, 1], tf.int32))
    metrics = {name: FederatedType(tf.float32, SERVER) for name in ("num_examples", "loss", "accuracy")}
    signature = FunctionType(
        StructType([(None, FederatedType(model, SERVER)), (None, FederatedType(SequenceType(batches), CLIENTS))]),
        metrics,
    )
    assert str(signature) == (
        "(<<trainable=<weights=float32[784,10],bias=float32[10]>,non_trainable=<>>@SERVER,"
        "{<x=float32[?,784],y=int32[?,1]>*}@CLIENTS> -> "
        "<accuracy=float32@SERVER,loss=float32@SERVER,num_examples=float32@SERVER>)"
    )
    assert str(FunctionType(FederatedType(tf.float32, CLIENTS), FederatedType(tf.float32, SERVER))) == (
        "({float32}@CLIENTS -> float32@SERVER)"
    )


def test_federated_type_members_accept_everything_to_type_accepts():
    assert FederatedType(tf.float32, CLIENTS) == FederatedType(np.float32, CLIENTS) == FederatedType(float, CLIENTS)
    assert str(FederatedType((tf.float32, [None, 784]), CLIENTS)) == "{float32[?,784]}@CLIENTS"
    assert str(FederatedType({"y": tf.int32, "x": np.float32}, SERVER)) == "<x=float32,y=int32>@SERVER"


def test_all_equal_defaults_to_true_at_server_and_false_at_clients():
    assert FederatedType(float, SERVER).all_equal is True
    assert FederatedType(float, CLIENTS).all_equal is False


def test_types_compare_and_hash_structurally():
    a = StructType([("x", TensorType(tf.float32, [None]))])
    b = StructType([("x", TensorType(np.float32, (None,)))])
    assert a == b and hash(a) == hash(b)
    assert a != StructType([("y", TensorType(tf.float32, [None]))])
    assert TensorType(float, [2]) != TensorType(float, [3])
    assert FederatedType(float, CLIENTS) != FederatedType(float, CLIENTS, all_equal=True)
    assert len({FederatedType(float, SERVER), FederatedType(tf.float32, SERVER)}) == 1


def test_repr_shows_the_constructor_form():
    assert repr(TensorType(tf.int32, [None, 1])) == "TensorType('int32', (None, 1))"
    assert repr(FederatedType(float, SERVER)) == "FederatedType(TensorType('float32', ()), SERVER, all_equal=True)"


def test_struct_elements_are_found_by_name_or_index():
    struct = StructType([("a", float), ("b", int)])
    assert struct["b"] == struct[1] == TensorType(np.int32)
    with pytest.raises(KeyError, match="'c' is not an element of <a=float32,b=int32>; available: 'a', 'b'"):
        struct["c"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        (tf.float32, "float32"),
        (np.dtype("int64"), "int64"),
        (float, "float32"),
        (int, "int32"),
        (bool, "bool"),
        (str, "string"),
        ((tf.float32, [None, 784]), "float32[?,784]"),
        ((np.int32, ()), "int32"),
        (tf.TensorSpec([None, 1], tf.int32), "int32[?,1]"),
        (np.zeros((2, 3), np.float64), "float64[2,3]"),
        (np.float32(1.5), "float32"),
        (1.5, "float32"),
        (3, "int32"),
        (True, "bool"),
        ("text", "string"),
        (tf.constant([1, 2]), "int32[2]"),
        (tf.Variable(tf.zeros([3, 4])), "float32[3,4]"),
        ((tf.float32, tf.int32), "<float32,int32>"),
        ([1.0, np.int64(2)], "<float32,int64>"),
    ],
)
def test_to_type_converts_dtypes_specs_and_values(spec, expected):
    assert str(ft.to_type(spec)) == expected


def test_to_type_keeps_ordered_containers_in_order_and_sorts_plain_dicts():
    ordered = collections.OrderedDict(num_examples=float, loss=float, accuracy=float)
    assert str(ft.to_type(ordered)) == "<num_examples=float32,loss=float32,accuracy=float32>"
    assert str(ft.to_type(dict(ordered))) == "<accuracy=float32,loss=float32,num_examples=float32>"
    Point = collections.namedtuple("Point", ["y", "x"])
    assert str(ft.to_type(Point(1.0, 2))) == "<y=float32,x=int32>"

    @dataclasses.dataclass
    class Metrics:
        loss: float
        count: int

    assert str(ft.to_type(Metrics(0.5, 3))) == "<loss=float32,count=int32>"


def test_to_type_of_datasets_and_dataset_specs_is_a_sequence():
    data = tf.data.Dataset.from_tensor_slices(
        {"y": np.zeros((5, 1), np.int32), "x": np.zeros((5, 784), np.float32)}
    ).batch(2)
    assert str(ft.to_type(data)) == "<x=float32[?,784],y=int32[?,1]>*"
    assert ft.to_type(tf.data.DatasetSpec(data.element_spec)) == ft.to_type(data)


def test_to_type_returns_types_unchanged():
    struct = StructType([("a", float)])
    assert ft.to_type(struct) is struct


def test_infer_type_reads_tuples_as_structures_never_as_specs():
    assert str(ft.infer_type((1.0, [2, 3]))) == "<float32,<int32,int32>>"
    assert str(ft.to_type((tf.float32, [2, 3]))) == "float32[2,3]"
    with pytest.raises(TypeError, match="Cannot give a federated type to <class 'float'>"):
        ft.infer_type(float)


def test_unconvertible_objects_raise_a_type_error_naming_them():
    with pytest.raises(TypeError, match=r"Cannot give a federated type to None \(NoneType\)"):
        ft.to_type(None)
    with pytest.raises(TypeError, match="Expected str keys in a structure, got 1"):
        ft.to_type({1: float})


def test_constructor_arguments_are_checked():
    with pytest.raises(TypeError, match="Expected a placement, SERVER or CLIENTS, got 'SERVER'"):
        FederatedType(float, "SERVER")
    with pytest.raises(TypeError, match="member cannot be of type float32@SERVER"):
        FederatedType(FederatedType(float, SERVER), CLIENTS)
    with pytest.raises(ValueError, match="Shapes of unknown rank are not supported"):
        TensorType(tf.float32, tf.TensorShape(None))
    with pytest.raises(TypeError, match="StructType expects \\(name, type\\) pairs"):
        StructType([tf.float32])
    with pytest.raises(ValueError, match="Duplicate element name 'a'"):
        StructType([("a", float), ("a", int)])


def test_assignability_lets_unknown_dimensions_accept_known_ones():
    unknown = FederatedType(SequenceType((tf.float32, [None, 784])), CLIENTS)
    known = FederatedType(SequenceType((tf.float32, [32, 784])), CLIENTS)
    assert unknown.is_assignable_from(known)
    assert not known.is_assignable_from(unknown)
    assert FederatedType(float, CLIENTS).is_assignable_from(FederatedType(float, CLIENTS, all_equal=True))
    assert not FederatedType(float, CLIENTS, all_equal=True).is_assignable_from(FederatedType(float, CLIENTS))
