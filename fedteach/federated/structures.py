"""Reading and building the Python containers that hold structured values."""

import collections
import dataclasses

import numpy as np


def is_namedtuple(obj):
    """Whether ``obj`` is a namedtuple instance.

    Example:
        >>> is_namedtuple(collections.namedtuple('P', 'x y')(1, 2)), is_namedtuple((1, 2))
        (True, False)
    """
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def is_dataclass_instance(obj):
    """Whether ``obj`` is an instance (not the class) of a dataclass.

    Example:
        >>> @dataclasses.dataclass
        ... class Point:
        ...     x: float
        >>> is_dataclass_instance(Point(1.0)), is_dataclass_instance(Point)
        (True, False)
    """
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def named_items(obj):
    """The ``(name, value)`` pairs of a named structure, or None for anything else.

    Mappings keep their own order (``to_type`` sorts plain dicts itself).

    Example:
        >>> named_items({'b': 1, 'a': 2}), named_items([1, 2])
        ([('b', 1), ('a', 2)], None)
    """
    if isinstance(obj, collections.abc.Mapping):
        return list(obj.items())
    if is_namedtuple(obj):
        return list(zip(obj._fields, obj))
    if is_dataclass_instance(obj):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return None


def element(value, name, index):
    """The element ``name`` (or, when unnamed, at ``index``) of a structured value.

    Example:
        >>> element({'loss': 1.0}, 'loss', 0), element((5, 6), None, 1)
        (1.0, 6)
    """
    if type(value) in (list, tuple):  # the quick tests first: plain lists and dicts are the usual members
        return value[index]
    if type(value) in _PLAIN_MAPPINGS or isinstance(value, collections.abc.Mapping):
        return value[name]
    if name is not None:
        return getattr(value, name)
    return value[index]


_PLAIN_MAPPINGS = (dict, collections.OrderedDict)


def build(container, names, elements):
    """Builds a structured value of class ``container`` from names and elements.

    Args:
        container: ``dict``, ``OrderedDict``, a namedtuple or dataclass class, ``tuple``
            or ``list``; ``None`` means ``dict`` when every element is named, else ``tuple``.
        names: The element names (``None`` for unnamed elements).
        elements: The element values, in the same order.

    Example:
        >>> build(None, ['a', 'b'], [1, 2]), build(list, [None, None], [1, 2])
        ({'a': 1, 'b': 2}, [1, 2])
    """
    if container is None:
        container = dict if names and None not in names else tuple
    if issubclass(container, collections.abc.Mapping):
        return container(zip(names, elements))
    if hasattr(container, "_fields") or dataclasses.is_dataclass(container):
        return container(**dict(zip(names, elements)))
    return container(elements)


def describe(value):
    """A short description of a value for error messages.

    Example:
        >>> describe('abc'), describe(np.zeros(3))
        ("'abc' (str)", 'array of float64[3]')
    """
    if isinstance(value, np.ndarray):
        return f"array of {value.dtype}[{','.join(map(str, value.shape))}]"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
