"""Federated operators ("intrinsics"): the only way to combine federated values.

Each intrinsic works on tracing placeholders (computing only the result type) and on
concrete values (computing the result with numpy; the result keeps the input dtype,
arithmetic is done in float64 and cast back).
"""

import numpy as np

from fedteach.federated import structures
from fedteach.federated.conversions import infer_type, to_type
from fedteach.federated.placements import CLIENTS, SERVER, PlacementError
from fedteach.federated.types import FederatedType, StructType, TensorType
from fedteach.federated.values import _PLACEHOLDER, FederatedValue, conform, zeros


def federated_value(value, placement):
    """Places a concrete value at ``placement``, the same on every device.

    Args:
        value: A concrete value (number, array, structure...).
        placement: ``SERVER`` or ``CLIENTS``.

    Returns:
        An all-equal ``FederatedValue`` (``T@SERVER`` or ``T@CLIENTS``).

    Example:
        >>> from fedteach.federated import SERVER
        >>> print(federated_value({'lr': 0.1}, SERVER).type)
        <lr=float32>@SERVER
    """
    if isinstance(value, FederatedValue):
        raise TypeError(
            f"federated_value expects a plain value, got a federated value of type {value.type}. "
            "Hint: use federated_broadcast to move a SERVER value to the clients."
        )
    type_spec = FederatedType(infer_type(value), placement, all_equal=True)
    return FederatedValue._trusted(type_spec, conform(value, type_spec, "federated_value"))


def federated_broadcast(value):
    """Sends a ``SERVER`` value to every client.

    Args:
        value: A ``FederatedValue`` placed at ``SERVER``.

    Returns:
        The same member at ``CLIENTS``, all-equal (printed ``T@CLIENTS``).

    Raises:
        PlacementError: ``value`` is not at ``SERVER``.

    Example:
        >>> from fedteach.federated import SERVER
        >>> print(federated_broadcast(federated_value(1.0, SERVER)).type)
        float32@CLIENTS
    """
    _require(value, SERVER, "federated_broadcast", "the value is already at the clients.")
    type_spec = FederatedType(value.type.member, CLIENTS, all_equal=True)
    return FederatedValue._trusted(type_spec, value._value)


def federated_map(fn, value, result_type=None):
    """Applies ``fn`` to the member on each device, keeping the placement.

    ``value`` may also be a tuple or list of federated values at one placement; then
    ``fn`` gets one positional argument per value (all-equal values, such as a
    broadcast model, are passed unchanged to every client).

    The result member type is ``result_type`` when given. Otherwise it is inferred
    from what ``fn`` returns: on concrete values, from the results (every client must
    return the same type); while tracing, or for zero clients, by calling ``fn`` once
    on zero values of the member types (unknown dimensions of size 0, sequences as
    empty lists). Pass ``result_type`` when ``fn`` cannot run on such zero values.

    Args:
        fn: A Python or TensorFlow function of the member(s).
        value: A ``FederatedValue``, or a tuple/list of them at the same placement.
        result_type: Optional member type of the result (anything ``to_type`` accepts).

    Returns:
        A ``FederatedValue`` at the same placement; all-equal when every input is.

    Raises:
        PlacementError: the inputs are at different placements.
        TypeError: ``value`` is not federated, or clients return different types.

    Example:
        >>> from fedteach.federated import CLIENTS
        >>> squares = federated_map(lambda x: x * x, federated_value_list([1.0, 2.0, 3.0]))
        >>> print(squares.type, [float(v) for v in squares.value])
        {float32}@CLIENTS [1.0, 4.0, 9.0]
    """
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not values:
        raise TypeError("federated_map expects at least one federated value to map over, got none.")
    for v in values:
        _require_federated(v, "federated_map")
    placements = {v.type.placement for v in values}
    if len(placements) > 1:
        raise PlacementError(
            "federated_map expects all its values at one placement, got "
            f"{', '.join(str(v.type) for v in values)}. Hint: use federated_broadcast to "
            "send SERVER values to the clients."
        )
    placement = placements.pop()
    all_equal = all(v.type.all_equal for v in values)
    if any(v.is_placeholder for v in values):
        member = _traced_result_type(fn, values, result_type)
        return FederatedValue._trusted(FederatedType(member, placement, all_equal), _PLACEHOLDER)
    if all_equal:
        result = fn(*(v._value for v in values))
        member = to_type(result_type) if result_type is not None else infer_type(result)
        type_spec = FederatedType(member, placement, all_equal)
        return FederatedValue._trusted(type_spec, conform(result, member, "federated_map result"))
    num_clients = _num_clients(values, "federated_map")
    results = [fn(*(v._value if v.type.all_equal else v._value[i] for v in values)) for i in range(num_clients)]
    if result_type is not None:
        member = to_type(result_type)
    elif results:
        member = _common_type(results)
    else:
        member = _traced_result_type(fn, values, None)
    type_spec = FederatedType(member, placement, all_equal)
    return FederatedValue._trusted(type_spec, conform(results, type_spec, "federated_map result"))


def federated_value_list(members):
    """A ``CLIENTS`` value from a list with one member per client.

    Args:
        members: A non-empty list; every member must have the same type.

    Returns:
        A ``FederatedValue`` of type ``{T}@CLIENTS``.

    Example:
        >>> print(federated_value_list([{'loss': 1.0}, {'loss': 2.0}]).type)
        {<loss=float32>}@CLIENTS
    """
    if not isinstance(members, list) or not members:
        raise TypeError(
            f"Expected a non-empty list with one member per client, got {structures.describe(members)}. "
            "Hint: with no clients the member type is unknown; use FederatedValue(type, [])."
        )
    type_spec = FederatedType(_common_type(members), CLIENTS)
    return FederatedValue._trusted(type_spec, conform(members, type_spec, "clients"))


def federated_sum(value):
    """Adds up the clients' members onto the server, element-wise for structures.

    Args:
        value: A ``FederatedValue`` at ``CLIENTS`` with numeric members.

    Returns:
        A ``SERVER`` value with the member type of ``value``.

    Raises:
        PlacementError: ``value`` is not at ``CLIENTS``.
        TypeError: a member is not numeric.
        ValueError: there are no clients (the sum of nothing is not defined here), or
            the number of clients of an all-equal value (a broadcast) is unknown.

    Example:
        >>> total = federated_sum(federated_value_list([{'n': 2.0}, {'n': 6.0}]))
        >>> print(total.type, total.value)
        <n=float32>@SERVER {'n': np.float32(8.0)}
    """
    _require(value, CLIENTS, "federated_sum", "federated_sum adds up the clients' values onto the server; a SERVER value is already aggregated.")
    _check_numeric(value.type.member, "federated_sum", "iufc")
    type_spec = FederatedType(value.type.member, SERVER)
    if value.is_placeholder:
        return FederatedValue._trusted(type_spec, _PLACEHOLDER)
    _num_clients([value], "federated_sum")
    return FederatedValue._trusted(type_spec, _leafwise(value.type.member, value._value, sum_leaves))


def sum_leaves(tensor_type, leaves):
    """The sum of the clients' ``leaves`` of one tensor type, as ``federated_sum`` adds them up: floats
    accumulated in float64 (complex in complex128), the result in the type's dtype.

    Example:
        >>> from fedteach.federated.types import TensorType
        >>> sum_leaves(TensorType(np.float32), [np.float32(0.1), np.float32(0.2)])
        np.float32(0.3)
    """
    dtype = tensor_type.dtype
    accumulator = np.promote_types(dtype, np.float64) if dtype.kind in "fc" else dtype
    return np.array(leaves, accumulator).sum(axis=0).astype(dtype)  # np.array stacks, as np.stack would


def federated_mean(value, weight=None):
    """The (weighted) mean of the clients' members, on the server.

    Args:
        value: A ``FederatedValue`` at ``CLIENTS`` with floating-point members
            (structures are averaged element-wise).
        weight: Optional ``CLIENTS`` value of numeric scalars, one weight per client.

    Returns:
        A ``SERVER`` value with the member type of ``value``:
        ``sum(w_i * x_i) / sum(w_i)``, or the plain mean without weights.

    Raises:
        PlacementError: ``value`` or ``weight`` is not at ``CLIENTS``.
        TypeError: a member is not floating-point, or a weight is not a numeric scalar.
        ValueError: there are no clients, the weights add up to 0 (or are not
            finite), or ``value`` and ``weight`` have different numbers of clients.

    Example:
        >>> losses = federated_value_list([1.0, 3.0])
        >>> float(federated_mean(losses).value)
        2.0
        >>> float(federated_mean(losses, federated_value_list([2.0, 6.0])).value)
        2.5
    """
    hint = "federated_mean averages the clients' values onto the server; a SERVER value is already aggregated."
    _require(value, CLIENTS, "federated_mean", hint)
    _check_numeric(value.type.member, "federated_mean", "fc")
    inputs = [value]
    if weight is not None:
        _require(weight, CLIENTS, "federated_mean", "the weight is one number per client.")
        weight_type = weight.type.member
        if not (isinstance(weight_type, TensorType) and weight_type.shape == () and weight_type.dtype.kind in "iuf"):
            raise TypeError(
                f"federated_mean expects a weight of numeric scalars at CLIENTS, got {weight.type}. "
                "Hint: weight by the number of examples, e.g. metrics.num_examples."
            )
        inputs.append(weight)
    type_spec = FederatedType(value.type.member, SERVER)
    if any(v.is_placeholder for v in inputs):
        return FederatedValue._trusted(type_spec, _PLACEHOLDER)
    num_clients = _num_clients([value], "federated_mean")
    weights = np.ones(num_clients) if weight is None else np.asarray(weight._value, np.float64)
    if weights.shape not in [(), (num_clients,)]:
        raise ValueError(
            f"federated_mean got {num_clients} client values but {len(weights)} weights. "
            "Hint: give one weight per client."
        )
    weights = np.broadcast_to(weights, (num_clients,))
    total = weights.sum()
    if total == 0 or not np.isfinite(total):
        raise ValueError(
            f"federated_mean needs weights with a finite, non-zero total, got a total of {total} "
            f"from the weights {weights.tolist()}. Hint: clients without examples have weight 0; "
            "make sure at least one client has data."
        )

    def average(tensor_type, leaves):
        stacked = np.stack(leaves).astype(np.promote_types(tensor_type.dtype, np.float64))
        return (np.tensordot(weights, stacked, axes=1) / total).astype(tensor_type.dtype)

    return FederatedValue._trusted(type_spec, _leafwise(value.type.member, value._value, average))


federated_average = federated_mean  # The name used in the TFF image classification tutorial.


def _require_federated(value, intrinsic):
    if not isinstance(value, FederatedValue):
        raise TypeError(
            f"{intrinsic} expects a federated value, got {structures.describe(value)}. Hint: use the "
            "parameters of a federated_computation, or make one with federated_value(value, placement)."
        )


def _require(value, placement, intrinsic, hint):
    _require_federated(value, intrinsic)
    if value.type.placement is not placement:
        raise PlacementError(
            f"{intrinsic} expects a value placed at {placement}, got {value.type}. Hint: {hint}"
        )


def _check_numeric(type_spec, intrinsic, kinds):
    if isinstance(type_spec, StructType):
        for _, element in type_spec:
            _check_numeric(element, intrinsic, kinds)
    elif not (isinstance(type_spec, TensorType) and type_spec.dtype.kind in kinds):
        wanted = "floating-point" if kinds == "fc" else "numeric"
        raise TypeError(
            f"{intrinsic} expects {wanted} members, got {type_spec}. Hint: compute a "
            f"{wanted} value on each client first with federated_map."
        )


def _num_clients(values, intrinsic):
    counts = {len(v._value) for v in values if not v.type.all_equal}
    if not counts:
        raise ValueError(
            f"{intrinsic} cannot tell how many clients hold the all-equal value of type "
            f"{values[0].type}. Hint: combine it with a per-client value first."
        )
    if len(counts) > 1:
        raise ValueError(f"{intrinsic} got values for different numbers of clients: {sorted(counts)}.")
    count = counts.pop()
    if count == 0 and intrinsic != "federated_map":
        raise ValueError(f"{intrinsic} got no clients. Hint: give at least one client a value.")
    return count


def _common_type(members):
    types = [infer_type(m) for m in members]
    for i, t in enumerate(types):
        if t != types[0]:
            raise TypeError(
                f"Every client must have a member of the same type, but client 0 has {types[0]} "
                f"and client {i} has {t}."
            )
    return types[0]


def _traced_result_type(fn, values, result_type):
    if result_type is not None:
        return to_type(result_type)
    return infer_type(fn(*(zeros(v.type.member) for v in values)))


def _leafwise(type_spec, members, leaf_fn):
    """Applies ``leaf_fn(tensor_type, [leaf of each member])`` across a structure."""
    if isinstance(type_spec, TensorType):
        return leaf_fn(type_spec, members)
    elements = [
        _leafwise(t, [structures.element(m, name, i) for m in members], leaf_fn)
        for i, (name, t) in enumerate(type_spec)
    ]
    return structures.build(type(members[0]), type_spec.names, elements)
