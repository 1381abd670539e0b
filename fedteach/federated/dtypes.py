"""Normalisation of dtypes and shapes given as TensorFlow, numpy or Python objects."""

import numpy as np

# Python types map to the dtypes TFF used for them (Python floats are float32).
_PYTHON_DTYPES = {
    bool: np.dtype(np.bool_),
    int: np.dtype(np.int32),
    float: np.dtype(np.float32),
    complex: np.dtype(np.complex64),
    str: np.dtype(object),
    bytes: np.dtype(object),
}

STRING = np.dtype(object)


def is_dtype_like(obj):
    """Whether ``obj`` names a dtype (a class or dtype object, never a string).

    Args:
        obj: Anything.

    Returns:
        True for ``tf.DType`` objects, numpy dtypes, numpy scalar classes and the
        Python classes ``bool``, ``int``, ``float``, ``complex``, ``str`` and ``bytes``.

    Example:
        >>> is_dtype_like(np.float32), is_dtype_like(float), is_dtype_like('float32')
        (True, True, False)
    """
    if isinstance(obj, type):
        return obj in _PYTHON_DTYPES or issubclass(obj, np.generic)
    return isinstance(obj, np.dtype) or hasattr(obj, "as_numpy_dtype")


def as_dtype(dtype):
    """Converts a dtype given in any supported form to a numpy dtype.

    Strings (``tf.string``, ``str``, ``bytes``, the name ``'string'``) all become
    ``np.dtype(object)``, which types print as ``string``.

    Args:
        dtype: A ``tf.DType``, numpy dtype or scalar class, a Python class listed in
            ``is_dtype_like``, or a dtype name such as ``'float32'``.

    Returns:
        A ``numpy.dtype``.

    Raises:
        TypeError: ``dtype`` does not name a dtype.

    Example:
        >>> as_dtype(float), as_dtype('int64'), as_dtype(str)
        (dtype('float32'), dtype('int64'), dtype('O'))
    """
    if isinstance(dtype, type) and dtype in _PYTHON_DTYPES:
        return _PYTHON_DTYPES[dtype]
    if dtype == "string":
        return STRING
    dtype = getattr(dtype, "as_numpy_dtype", dtype)  # tf.DType -> numpy class
    try:
        result = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        result = None
    if result is None or (result.kind == "O" and dtype is not object):
        raise TypeError(
            f"Expected a dtype (e.g. tf.float32, np.int32, float), got {dtype!r}."
        )
    return STRING if result.kind in "OUS" else result


def dtype_name(dtype):
    """The name a dtype prints with: numpy's name, or ``string`` for strings.

    Example:
        >>> dtype_name(np.dtype('float32')), dtype_name(np.dtype(object))
        ('float32', 'string')
    """
    return "string" if dtype == STRING else dtype.name


def as_shape(shape):
    """Converts a shape to a tuple whose entries are ints or ``None`` (unknown).

    Args:
        shape: A list or tuple of ints / ``None``, or a ``tf.TensorShape`` of known rank.

    Returns:
        A tuple of ints and ``None``.

    Raises:
        TypeError: ``shape`` is not a sequence of dimensions.
        ValueError: the rank is unknown, or a dimension is negative.

    Example:
        >>> as_shape([None, 784])
        (None, 784)
    """
    if hasattr(shape, "as_list") and hasattr(shape, "rank"):  # tf.TensorShape
        if shape.rank is None:
            raise ValueError(
                "Shapes of unknown rank are not supported. Hint: give the number of "
                "dimensions, using None for unknown sizes, e.g. [None, 784]."
            )
        shape = shape.as_list()
    if not isinstance(shape, (list, tuple)):
        raise TypeError(
            f"Expected a shape as a list or tuple of ints/None, got {shape!r}. "
            "Hint: a scalar has shape ()."
        )
    dims = []
    for dim in shape:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))):
            raise TypeError(f"Expected each dimension to be an int or None, got {dim!r} in {shape!r}.")
        if dim is not None and dim < 0:
            raise ValueError(f"Expected non-negative dimensions, got {dim} in {shape!r}.")
        dims.append(None if dim is None else int(dim))
    return tuple(dims)
