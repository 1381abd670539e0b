"""Conversion of type specifications and concrete values to federated types."""

import numpy as np

from fedteach.federated import dtypes, structures
from fedteach.federated.types import SequenceType, StructType, TensorType, Type

_PYTHON_SCALARS = (bool, int, float, complex, str, bytes)


def to_type(spec):
    """Converts a type specification or a value to a ``Type``.

    Accepted: an existing ``Type`` (returned as is); a dtype (``tf.float32``,
    ``np.int32``, ``float`` -> float32, ``int`` -> int32, ``bool``); a ``(dtype, shape)``
    pair; a ``tf.TensorSpec``; a ``tf.data.DatasetSpec`` or ``tf.data.Dataset``
    (-> ``SequenceType`` of its element); numpy arrays and scalars, Python numbers,
    TensorFlow tensors and variables (-> their dtype and shape); ``OrderedDict`` and
    dataclass instances (-> ``StructType`` in their order); a plain ``dict`` (-> keys
    sorted, as TFF did); a namedtuple (-> named, in field order); a tuple or list
    (-> unnamed). Containers are converted element by element.

    Args:
        spec: The specification.

    Returns:
        A ``Type``.

    Raises:
        TypeError: ``spec`` cannot be converted.

    Example:
        >>> import numpy as np
        >>> print(to_type((np.float32, [None, 784])))
        float32[?,784]
        >>> print(to_type({'num_examples': float, 'loss': float, 'accuracy': float}))
        <accuracy=float32,loss=float32,num_examples=float32>
    """
    return _convert(spec, specs=True)


def infer_type(value):
    """The type of a concrete Python value.

    Like ``to_type``, but a value is never read as a type specification: a tuple is
    always a structure and ``float`` (the class) is not a value. An object with a
    ``.type`` that is a ``Type`` (a ``FederatedValue``) has that type.

    Args:
        value: The value.

    Returns:
        A ``Type``.

    Raises:
        TypeError: ``value`` has no federated type.

    Example:
        >>> import numpy as np
        >>> print(infer_type({'loss': 1.0, 'n': np.int64(3)}), infer_type((np.zeros([2, 3]), 'a')))
        <loss=float32,n=int64> <float64[2,3],string>
    """
    return _convert(value, specs=False)


def _convert(obj, specs):
    if isinstance(obj, Type):
        if specs:
            return obj
        raise TypeError(f"Expected a value, got the type {obj}. Hint: use to_type for types.")
    if isinstance(getattr(obj, "type", None), Type):
        return obj.type
    if specs and _is_tensor_spec_pair(obj):
        return TensorType(obj[0], obj[1])
    if specs and dtypes.is_dtype_like(obj):
        return TensorType(obj)
    items = structures.named_items(obj)
    if items is not None:
        for name, _ in items:
            if not isinstance(name, str):
                raise TypeError(f"Expected str keys in a structure, got {name!r} in {structures.describe(obj)}.")
        if type(obj) is dict:
            items = sorted(items)
        return StructType([(n, _convert(v, specs)) for n, v in items], container=type(obj))
    if isinstance(obj, (tuple, list)):
        return StructType([(None, _convert(v, specs)) for v in obj], container=type(obj))
    return _leaf_type(obj)


def _is_tensor_spec_pair(obj):
    return (
        type(obj) is tuple
        and len(obj) == 2
        and dtypes.is_dtype_like(obj[0])
        and (
            hasattr(obj[1], "as_list")
            or (isinstance(obj[1], (list, tuple)) and all(d is None or isinstance(d, int) for d in obj[1]))
        )
    )


def _leaf_type(value):
    if isinstance(value, (np.ndarray, np.generic)):
        return TensorType(value.dtype, value.shape)
    if isinstance(value, _PYTHON_SCALARS):
        # The first match, so that bool is not read as int (bool subclasses int).
        return TensorType(next(t for t in _PYTHON_SCALARS if isinstance(value, t)))
    if hasattr(value, "element_spec"):  # tf.data.Dataset, tf.data.DatasetSpec
        return SequenceType(to_type(value.element_spec))
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # tensors, variables, TensorSpec
        return TensorType(value.dtype, value.shape)
    raise TypeError(
        f"Cannot give a federated type to {structures.describe(value)}. Expected a dtype, "
        "a (dtype, shape) pair, a TensorSpec, a dataset, an array, a number or a string, or "
        "a dict/OrderedDict/namedtuple/dataclass/tuple/list of those."
    )

