"""Federated values: one value on the server, or one member per client."""

import collections

import numpy as np

from fedteach.federated import dtypes, structures
from fedteach.federated.conversions import to_type
from fedteach.federated.types import FederatedType, SequenceType, StructType, TensorType, _available


class _Placeholder:
    def __repr__(self):
        return "<placeholder>"


_PLACEHOLDER = _Placeholder()


class FederatedValue:
    """A value placed at ``SERVER`` or ``CLIENTS``, with its ``FederatedType``.

    ``.value`` is the single member at ``SERVER`` (and for an all-equal value at
    ``CLIENTS``, e.g. a broadcast), or a list with one member per client. While a
    ``federated_computation`` is being traced its parameters are placeholders:
    they have a type but no value, and can only be passed to intrinsics.

    Named elements of a structured member are federated values at the same
    placement: ``metrics.loss`` or ``metrics['loss']``. Use the ``[...]`` form for
    elements named ``type``, ``value`` or ``is_placeholder``.

    Args:
        type_spec: A ``FederatedType`` (or anything ``to_type`` converts to one).
        value: The member (all-equal) or the list of per-client members; each member
            is checked against the member type and converted to numpy values.

    Raises:
        TypeError: ``value`` does not match ``type_spec``.

    Example:
        >>> from fedteach.federated import CLIENTS
        >>> metrics = FederatedValue(FederatedType({'loss': float}, CLIENTS),
        ...                          [{'loss': 1.0}, {'loss': 3.0}])
        >>> print(metrics.type, metrics.loss.type)
        {<loss=float32>}@CLIENTS {float32}@CLIENTS
        >>> [float(loss) for loss in metrics.loss.value]
        [1.0, 3.0]
    """

    def __init__(self, type_spec, value):
        type_spec = to_type(type_spec)
        if not isinstance(type_spec, FederatedType):
            raise TypeError(
                f"Expected a FederatedType, got {type_spec}. Hint: FederatedType(member, CLIENTS)."
            )
        self._type = type_spec
        self._value = conform(value, type_spec, "value")

    @classmethod
    def placeholder(cls, type_spec):
        """A value of type ``type_spec`` without a concrete value, used for tracing.

        Example:
            >>> from fedteach.federated import SERVER
            >>> FederatedValue.placeholder(FederatedType(float, SERVER))
            FederatedValue(float32@SERVER, <placeholder>)
        """
        return cls._trusted(to_type(type_spec), _PLACEHOLDER)

    @classmethod
    def _trusted(cls, type_spec, value):
        """Wraps a value already known to conform to ``type_spec``."""
        result = cls.__new__(cls)
        result._type = type_spec
        result._value = value
        return result

    @property
    def type(self):
        """The ``FederatedType`` of this value."""
        return self._type

    @property
    def is_placeholder(self):
        """Whether this is a tracing placeholder without a concrete value."""
        return self._value is _PLACEHOLDER

    @property
    def value(self):
        """The concrete member, or list of per-client members."""
        if self.is_placeholder:
            raise ValueError(
                f"This {self._type} value is a placeholder used while tracing a "
                "federated_computation: it has no concrete value. Hint: combine federated "
                "values with intrinsics such as federated_sum and federated_map."
            )
        return self._value

    @property
    def _per_device(self):
        return not self._type.all_equal

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names():
            raise AttributeError(
                f"The {self._type} value has no element {name!r}; available: "
                f"{_available(self._names())}."
            )
        return self._select(name)

    def __getitem__(self, key):
        if isinstance(key, str) and key not in self._names():
            raise KeyError(
                f"The {self._type} value has no element {key!r}; available: {_available(self._names())}."
            )
        if isinstance(key, int) and not -len(self._names()) <= key < len(self._names()):
            raise IndexError(f"Index {key} is out of range for the {self._type} value.")
        return self._select(key)

    def __iter__(self):
        raise TypeError(
            f"A {self._type} value is not iterable. Hint: use .value for the concrete "
            "member (a list with one member per client at CLIENTS)."
        )

    def _names(self):
        member = self._type.member
        return member.names if isinstance(member, StructType) else ()

    def _select(self, key):
        member_type = self._type.member
        index = member_type.names.index(key) if isinstance(key, str) else key % len(member_type)
        name = member_type.names[index]
        element_type = FederatedType(member_type[index], self._type.placement, self._type.all_equal)
        if self.is_placeholder:
            return FederatedValue._trusted(element_type, _PLACEHOLDER)
        if self._per_device:
            return FederatedValue._trusted(
                element_type, [structures.element(m, name, index) for m in self._value]
            )
        return FederatedValue._trusted(element_type, structures.element(self._value, name, index))

    def __repr__(self):
        return f"FederatedValue({self._type}, {self._value!r})"


def conform(value, type_spec, where):
    """Checks a concrete value against a type and converts it to numpy values.

    For a ``FederatedType`` that is not all-equal the value must be a list with one
    member per client. Tensors become numpy arrays (numpy scalars for shape ``()``)
    of the type's dtype; a cast is allowed within a kind or from int to float (e.g.
    a Python float to float32), never from float to int. Structures keep their
    container class (``dict``, ``OrderedDict``, namedtuple, dataclass, tuple, list)
    and are rebuilt in the type's element order; mappings may give their keys in any
    order. Datasets are checked by their ``element_spec``; other iterables given for
    a ``SequenceType`` are taken as they are.

    Args:
        value: The concrete value.
        type_spec: The expected ``Type``.
        where: How to name the value in error messages.

    Returns:
        The converted value.

    Raises:
        TypeError: the value does not match, with the path to the offending part.

    Example:
        >>> from fedteach.federated import CLIENTS
        >>> conform({'b': 2, 'a': 1.5}, to_type({'a': float, 'b': float}), 'x')
        {'a': np.float32(1.5), 'b': np.float32(2.0)}
        >>> conform([1.0, 'no'], FederatedType(float, CLIENTS), 'x')
        Traceback (most recent call last):
        ...
        TypeError: x[1]: expected float32, got 'no' (str).
    """
    if isinstance(type_spec, FederatedType):
        if type_spec.all_equal:
            return conform(value, type_spec.member, where)
        if not isinstance(value, list):
            raise TypeError(
                f"{where}: expected a list with one member per client for {type_spec}, "
                f"got {structures.describe(value)}."
            )
        return [conform(m, type_spec.member, f"{where}[{i}]") for i, m in enumerate(value)]
    if isinstance(type_spec, TensorType):
        return _conform_tensor(value, type_spec, where)
    if isinstance(type_spec, StructType):
        return _conform_struct(value, type_spec, where)
    if isinstance(type_spec, SequenceType):
        return _conform_sequence(value, type_spec, where)
    raise TypeError(f"{where}: values of type {type_spec} cannot be passed to or from a computation.")


def _mismatch(value, type_spec, where, detail=""):
    return TypeError(f"{where}: expected {type_spec}, got {structures.describe(value)}{detail}.")


def _conform_tensor(value, type_spec, where):
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == type_spec.dtype and (
            value.shape == type_spec.shape):  # already conforms (the usual case for the engines' outputs)
        return value[()] if value.ndim == 0 else value
    if type_spec.dtype == dtypes.STRING:
        if isinstance(value, (str, bytes, np.str_, np.bytes_)):
            return value
        raise _mismatch(value, type_spec, where)
    if isinstance(value, FederatedValue) or structures.named_items(value) is not None:
        raise _mismatch(value, type_spec, where)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise _mismatch(value, type_spec, where) from error
    if array.dtype.kind in "OUSV" or not np.can_cast(array.dtype, type_spec.dtype, "same_kind"):
        raise _mismatch(value, type_spec, where)
    if len(array.shape) != len(type_spec.shape) or any(
        d is not None and d != s for d, s in zip(type_spec.shape, array.shape)
    ):
        raise _mismatch(value, type_spec, where, f" of shape {tuple(array.shape)}")
    array = array.astype(type_spec.dtype, copy=False)
    return array[()] if array.ndim == 0 else array


def _conform_struct(value, type_spec, where):
    items = structures.named_items(value)
    names = type_spec.names
    if items is not None:
        given = [n for n, _ in items]
        if None in names or sorted(given) != sorted(names):
            raise _mismatch(value, type_spec, where, f" with elements {given}")
        by_name = dict(items)
        elements = [conform(by_name[n], t, f"{where}[{n!r}]") for n, t in type_spec]
    elif isinstance(value, (tuple, list)) and not any(names):
        if len(value) != len(type_spec):
            raise _mismatch(value, type_spec, where, f" with {len(value)} elements")
        elements = [conform(v, t, f"{where}[{i}]") for i, (v, (_, t)) in enumerate(zip(value, type_spec))]
    else:
        raise _mismatch(value, type_spec, where)
    return structures.build(type(value), names, elements)


def _conform_sequence(value, type_spec, where):
    if hasattr(value, "element_spec"):
        given = to_type(value.element_spec)
        if not type_spec.element.is_assignable_from(given):
            raise _mismatch(value, type_spec, where, f" with elements of type {given}")
        return value
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Iterable):
        raise _mismatch(value, type_spec, where)
    return value


def zeros(type_spec):
    """A zero value of a member type: zeros of the dtype, unknown dimensions of size 0.

    Strings are ``''``, sequences an empty list, structures are built with the type's
    container (``dict`` for named elements when it has none).

    Example:
        >>> zeros(to_type({'x': (float, [None, 2]), 'n': int}))
        {'n': np.int32(0), 'x': array([], shape=(0, 2), dtype=float32)}
    """
    if isinstance(type_spec, TensorType):
        if type_spec.dtype == dtypes.STRING:
            return ""
        return np.zeros([d or 0 for d in type_spec.shape], type_spec.dtype)[()]
    if isinstance(type_spec, StructType):
        return structures.build(type_spec.container, type_spec.names, [zeros(t) for _, t in type_spec])
    if isinstance(type_spec, SequenceType):
        return []
    raise TypeError(f"There is no zero value of type {type_spec}.")
