"""Federated computations without TensorFlow Federated: placements, types, values,
intrinsics and ``federated_computation``, in the notation of the TFF tutorials.

Example:
    >>> import fedteach.federated as ff
    >>> print(ff.FederatedType(float, ff.CLIENTS))
    {float32}@CLIENTS
"""

from fedteach.federated.computation import federated_computation
from fedteach.federated.conversions import infer_type, to_type
from fedteach.federated.intrinsics import (
    federated_average,
    federated_broadcast,
    federated_map,
    federated_mean,
    federated_sum,
    federated_value,
    federated_value_list,
)
from fedteach.federated.placements import CLIENTS, SERVER, Placement, PlacementError
from fedteach.federated.types import FederatedType, FunctionType, MappingType, SequenceType, StructType, TensorType
from fedteach.federated.values import FederatedValue

__all__ = [
    "SERVER",
    "CLIENTS",
    "Placement",
    "TensorType",
    "StructType",
    "MappingType",
    "SequenceType",
    "FederatedType",
    "FunctionType",
    "to_type",
    "infer_type",
    "FederatedValue",
    "PlacementError",
    "federated_value",
    "federated_value_list",
    "federated_broadcast",
    "federated_map",
    "federated_sum",
    "federated_mean",
    "federated_average",
    "federated_computation",
]
