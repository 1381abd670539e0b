"""Types of federated computations, printed in the notation of the TFF tutorials.

``float32[?,784]`` is a tensor, ``<a=float32,b=int32>`` a structure, ``<...>*`` a
sequence (a dataset), ``{string:float32}`` a table keyed by strings (e.g. client ids),
``{float32}@CLIENTS`` one value per client, ``float32@SERVER`` a value on the server
and ``(A -> B)`` a computation.
"""

import abc

from fedteach.federated import dtypes
from fedteach.federated.placements import SERVER, Placement


def _to_type(spec):
    # Imported here: conversions builds these types, and these types convert their members.
    from fedteach.federated.conversions import to_type

    return to_type(spec)


class Type(abc.ABC):
    """Base class of all types; types compare equal structurally.

    Example:
        >>> TensorType(float) == TensorType('float32')
        True
    """

    @abc.abstractmethod
    def _key(self):
        """A hashable tuple that identifies the type."""

    @abc.abstractmethod
    def is_assignable_from(self, other):
        """Whether every value of ``other`` is also a value of this type."""

    def __eq__(self, other):
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self):
        return hash((type(self).__name__, self._key()))


class TensorType(Type):
    """A tensor of a dtype and shape; ``None`` dimensions print as ``?``.

    Args:
        dtype: Anything ``dtypes.as_dtype`` accepts (``tf.float32``, ``np.int32``, ``float``...).
        shape: A list/tuple of ints or ``None``, or a ``tf.TensorShape``; ``()`` is a scalar.

    Example:
        >>> import numpy as np
        >>> print(TensorType(np.float32, [784, 10]), TensorType(np.int32, [None, 1]))
        float32[784,10] int32[?,1]
        >>> print(TensorType(np.int64))
        int64
    """

    def __init__(self, dtype, shape=()):
        self.dtype = dtypes.as_dtype(dtype)
        self.shape = dtypes.as_shape(shape)

    def _key(self):
        return (self.dtype, self.shape)

    def is_assignable_from(self, other):
        """Same dtype and rank; an unknown (``None``) dimension accepts any size.

        Example:
            >>> TensorType(float, [None]).is_assignable_from(TensorType(float, [3]))
            True
            >>> TensorType(float, [3]).is_assignable_from(TensorType(float, [None]))
            False
        """
        return (
            isinstance(other, TensorType)
            and self.dtype == other.dtype
            and len(self.shape) == len(other.shape)
            and all(a is None or a == b for a, b in zip(self.shape, other.shape))
        )

    def __str__(self):
        name = dtypes.dtype_name(self.dtype)
        if not self.shape:
            return name
        return name + "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"

    def __repr__(self):
        return f"TensorType({dtypes.dtype_name(self.dtype)!r}, {self.shape!r})"


class StructType(Type):
    """An ordered structure of (name or None, type) elements.

    Args:
        elements: A sequence of ``(name, type)`` pairs; ``name`` is a string or
            ``None``; ``type`` is anything ``to_type`` accepts.
        container: The Python class values of this type are built with (``dict``,
            ``OrderedDict``, a namedtuple or dataclass class, ``tuple``, ``list``);
            informative only, it takes no part in equality. ``to_type`` sets it.

    Example:
        >>> struct = StructType([('a', float), ('b', int)])
        >>> print(struct, StructType([(None, TensorType('int64'))]), StructType([]))
        <a=float32,b=int32> <int64> <>
        >>> struct.names, struct['b']
        (('a', 'b'), TensorType('int32', ()))
    """

    def __init__(self, elements, container=None):
        converted = []
        for element in elements:
            if not (isinstance(element, tuple) and len(element) == 2):
                raise TypeError(
                    f"StructType expects (name, type) pairs, got {element!r}. "
                    "Hint: use (None, type) for an unnamed element."
                )
            name, spec = element
            if name is not None and not (isinstance(name, str) and name):
                raise TypeError(f"Expected an element name as a non-empty str or None, got {name!r}.")
            if name is not None and name in (n for n, _ in converted):
                raise ValueError(f"Duplicate element name {name!r} in StructType.")
            converted.append((name, _to_type(spec)))
        self.elements = tuple(converted)
        self.container = container

    @property
    def names(self):
        """The element names, ``None`` for unnamed elements."""
        return tuple(name for name, _ in self.elements)

    def __len__(self):
        return len(self.elements)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, key):
        """The type of the element at an index (int) or with a name (str)."""
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"{key!r} is not an element of {self}; available: {_available(self.names)}.")
            return self.elements[self.names.index(key)][1]
        return self.elements[key][1]

    def _key(self):
        return self.elements

    def is_assignable_from(self, other):
        """Same names, each element assignable; fully named structs match by name in any order.

        Example:
            >>> StructType([('x', TensorType(float, [None]))]).is_assignable_from(
            ...     StructType([('x', TensorType(float, [5]))]))
            True
            >>> StructType([('a', TensorType(float)), ('b', TensorType(int))]).is_assignable_from(
            ...     StructType([('b', TensorType(int)), ('a', TensorType(float))]))
            True
        """
        if not isinstance(other, StructType) or len(self.elements) != len(other.elements):
            return False
        if self.names == other.names:
            return all(a.is_assignable_from(b) for (_, a), (_, b) in zip(self, other))
        if None in self.names or set(self.names) != set(other.names):
            return False
        theirs = dict(other.elements)
        return all(t.is_assignable_from(theirs[n]) for n, t in self.elements)

    def __str__(self):
        return "<" + ",".join(str(t) if n is None else f"{n}={t}" for n, t in self.elements) + ">"

    def __repr__(self):
        return f"StructType({list(self.elements)!r})"


class SequenceType(Type):
    """A sequence of elements of one type, e.g. a ``tf.data.Dataset``; prints ``element*``.

    Example:
        >>> print(SequenceType(StructType([('x', TensorType(float, [None, 784]))])))
        <x=float32[?,784]>*
    """

    def __init__(self, element):
        self.element = _to_type(element)

    def _key(self):
        return (self.element,)

    def is_assignable_from(self, other):
        """Whether ``other`` is a sequence whose element type is assignable.

        Example:
            >>> SequenceType(TensorType(int, [None])).is_assignable_from(SequenceType(TensorType(int, [2])))
            True
        """
        return isinstance(other, SequenceType) and self.element.is_assignable_from(other.element)

    def __str__(self):
        return f"{self.element}*"

    def __repr__(self):
        return f"SequenceType({self.element!r})"


class MappingType(Type):
    """A table of values of one type under keys of another, e.g. one entry per client id; prints ``{key:value}``.

    What a server keeps for each client it has seen (SCAFFOLD's control variates): how many entries,
    and under which ids, is not part of the type.

    Example:
        >>> print(MappingType(str, StructType([('kernel', TensorType('float32', [784, 10]))])))
        {string:<kernel=float32[784,10]>}
    """

    def __init__(self, key, value):
        self.key = _to_type(key)
        self.value = _to_type(value)

    def _key(self):
        return (self.key, self.value)

    def is_assignable_from(self, other):
        """Whether ``other`` is a table with the same keys and assignable values.

        Example:
            >>> MappingType(str, TensorType(float, [None])).is_assignable_from(MappingType(str, TensorType(float, [2])))
            True
        """
        return isinstance(other, MappingType) and self.key == other.key and self.value.is_assignable_from(other.value)

    def __str__(self):
        return f"{{{self.key}:{self.value}}}"

    def __repr__(self):
        return f"MappingType({self.key!r}, {self.value!r})"


class FederatedType(Type):
    """A value placed at ``SERVER`` or ``CLIENTS``.

    Args:
        member: The type of the value on each device; anything ``to_type`` accepts.
        placement: ``SERVER`` or ``CLIENTS``.
        all_equal: Whether all devices hold the same value. Defaults to True at
            ``SERVER`` (one value) and False at ``CLIENTS`` (one value per client).

    Example:
        >>> import numpy as np
        >>> from fedteach.federated import SERVER, CLIENTS
        >>> print(FederatedType(np.float32, SERVER), FederatedType(np.float32, CLIENTS))
        float32@SERVER {float32}@CLIENTS
        >>> print(FederatedType(float, CLIENTS, all_equal=True))
        float32@CLIENTS
    """

    def __init__(self, member, placement, all_equal=None):
        member = _to_type(member)
        if isinstance(member, (FederatedType, FunctionType)):
            raise TypeError(
                f"A federated value's member cannot be of type {member}. "
                "Hint: give the type of the value held on each device, e.g. float32."
            )
        if not isinstance(placement, Placement):
            raise TypeError(f"Expected a placement, SERVER or CLIENTS, got {placement!r}.")
        self.member = member
        self.placement = placement
        self.all_equal = placement is SERVER if all_equal is None else bool(all_equal)

    def _key(self):
        return (self.member, self.placement, self.all_equal)

    def is_assignable_from(self, other):
        """Same placement, assignable member; an all-equal value fits a per-client type.

        Example:
            >>> from fedteach.federated import CLIENTS
            >>> FederatedType(float, CLIENTS).is_assignable_from(FederatedType(float, CLIENTS, all_equal=True))
            True
        """
        return (
            isinstance(other, FederatedType)
            and self.placement is other.placement
            and self.member.is_assignable_from(other.member)
            and (other.all_equal or not self.all_equal)
        )

    def __str__(self):
        member = str(self.member) if self.all_equal else "{" + str(self.member) + "}"
        return f"{member}@{self.placement}"

    def __repr__(self):
        return f"FederatedType({self.member!r}, {self.placement!r}, all_equal={self.all_equal})"


class FunctionType(Type):
    """The type signature of a computation: ``(parameter -> result)``.

    Args:
        parameter: The parameter type, ``None`` for a computation without parameters;
            several parameters are an unnamed ``StructType``.
        result: The result type.

    Example:
        >>> from fedteach.federated import SERVER, CLIENTS
        >>> print(FunctionType(None, FederatedType(int, SERVER)))
        ( -> int32@SERVER)
        >>> print(FunctionType(FederatedType(float, CLIENTS), FederatedType(float, SERVER)))
        ({float32}@CLIENTS -> float32@SERVER)
    """

    def __init__(self, parameter, result):
        self.parameter = None if parameter is None else _to_type(parameter)
        self.result = _to_type(result)

    def _key(self):
        return (self.parameter, self.result)

    def is_assignable_from(self, other):
        """Function types are assignable only when equal.

        Example:
            >>> FunctionType(None, int).is_assignable_from(FunctionType(None, int))
            True
        """
        return self == other

    def __str__(self):
        parameter = "" if self.parameter is None else str(self.parameter)
        return f"({parameter} -> {self.result})"

    def __repr__(self):
        return f"FunctionType({self.parameter!r}, {self.result!r})"


def _available(names):
    return ", ".join(repr(n) for n in names if n is not None) or "none (the elements are unnamed)"
