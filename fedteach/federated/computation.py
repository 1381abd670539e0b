"""``federated_computation``: Python functions of federated values, with type signatures."""

import functools
import inspect

from fedteach.federated import structures
from fedteach.federated.conversions import infer_type, to_type
from fedteach.federated.intrinsics import federated_value_list
from fedteach.federated.placements import SERVER
from fedteach.federated.types import FederatedType, FunctionType, StructType, Type
from fedteach.federated.values import FederatedValue, conform


class FederatedComputation:
    """A Python function of federated values, traced once to get its type signature.

    Made by ``federated_computation``. Tracing calls the function once on typed
    placeholders (so Python side effects such as ``print`` also happen then) and
    records ``type_signature``. Every call then checks and converts the arguments and
    runs the function on concrete federated values.

    Calling conventions:
        * A parameter of type ``{T}@CLIENTS`` takes a Python ``list`` with one member
          per client; ``T@SERVER`` (and all-equal ``T@CLIENTS``) takes the member itself.
          A ``FederatedValue`` of an assignable type is also accepted.
        * An unbound computation binds its parameter types at the first call: a
          ``list`` argument is a ``CLIENTS`` value (one member per client, all of one
          type), anything else a ``SERVER`` value. Later calls must match these types
          (Python floats are float32; numbers are cast within their kind or from int to
          float) or raise a ``TypeError`` showing the signature.

    Return values: a ``SERVER`` result is the plain member (numpy scalars and arrays
    in structures), a ``CLIENTS`` result the list of members (the single member when
    all-equal), a structure of results the same structure of those (a plain ``dict``
    with its keys sorted, like its type), and a Python constant itself.

    Example:
        >>> from fedteach.federated import federated_sum
        >>> total = FederatedComputation(lambda values: federated_sum(values))
        >>> float(total([1.0, 2.0, 4.0]))
        7.0
        >>> print(total.type_signature)
        ({float32}@CLIENTS -> float32@SERVER)
    """

    def __init__(self, fn, parameter_types=None):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._signature = inspect.signature(fn)
        self._parameter_types = None
        self._type_signature = None
        if parameter_types is not None:
            self.bind(*parameter_types)
        elif not self._signature.parameters:
            self.bind()

    @property
    def type_signature(self):
        """The ``FunctionType`` of the computation, once its parameter types are bound."""
        if self._type_signature is None:
            raise AttributeError(
                f"{self.__name__} has no type signature yet: its parameter types are bound when "
                f"it is first called. Hint: call it once, or bind the types with "
                f"{self.__name__}.bind(FederatedType(member_type, CLIENTS)), or give them as "
                "@federated_computation(FederatedType(...))."
            )
        return self._type_signature

    def bind(self, *parameter_types):
        """Binds the parameter types and traces the function, without running it.

        Binding again with the same types does nothing; with other types it raises.

        Args:
            *parameter_types: One ``FederatedType`` (or anything ``to_type`` converts to
                one) per parameter of the function.

        Returns:
            This computation, so that ``comp.bind(...).type_signature`` works.

        Raises:
            TypeError: a type is not federated, the number of types does not match the
                function's parameters, or the computation is bound to other types.

        Example:
            >>> from fedteach.federated import federated_mean, FederatedType, CLIENTS
            >>> mean = federated_computation(lambda losses: federated_mean(losses))
            >>> print(mean.bind(FederatedType(float, CLIENTS)).type_signature)
            ({float32}@CLIENTS -> float32@SERVER)
        """
        types = tuple(to_type(t) for t in parameter_types)
        for name, type_spec in zip(self._parameter_names(len(types)), types):
            if not isinstance(type_spec, FederatedType):
                raise TypeError(
                    f"{self.__name__}: parameter {name!r} must have a federated type, got {type_spec}. "
                    f"Hint: place it, e.g. FederatedType({type_spec!r}, SERVER)."
                )
        if self._parameter_types is not None:
            if all(bound.is_assignable_from(t) for bound, t in zip(self._parameter_types, types)) and len(
                    types) == len(self._parameter_types):
                return self
            raise TypeError(
                f"{self.__name__} is already bound to {self._type_signature}; cannot bind it to the "
                f"parameter types ({', '.join(map(str, types))}). Hint: make a new computation."
            )
        try:
            self._signature.bind(*types)
        except TypeError as error:
            raise TypeError(
                f"{self.__name__}{self._signature} cannot take {len(types)} parameter type(s): {error}."
            ) from None
        try:
            result = self._fn(*(FederatedValue.placeholder(t) for t in types))
        except Exception as error:
            error.add_note(f"(while tracing {self.__name__} with parameter types {', '.join(map(str, types))})")
            raise
        if len(types) == 1:
            parameter = types[0]
        else:
            parameter = StructType([(None, t) for t in types]) if types else None
        self._type_signature = FunctionType(parameter, infer_type(result))
        self._parameter_types = types
        return self

    def __call__(self, *args, **kwargs):
        args = self._signature.bind(*args, **kwargs).args
        if self._parameter_types is None:
            self.bind(*(_argument_type(a) for a in args))
        names = self._parameter_names(len(args))
        values = [self._argument(a, t, n) for a, t, n in zip(args, self._parameter_types, names)]
        return _unwrap(self._fn(*values))

    def _parameter_names(self, count):
        names = [p.name for p in self._signature.parameters.values() if p.kind != p.VAR_POSITIONAL]
        return [names[i] if i < len(names) else f"argument {i}" for i in range(count)]

    def _argument(self, value, type_spec, name):
        if isinstance(value, FederatedValue):
            if type_spec.is_assignable_from(value.type):
                return value
            error = TypeError(f"{name}: expected {type_spec}, got a federated value of type {value.type}.")
        else:
            try:
                return FederatedValue._trusted(type_spec, conform(value, type_spec, name))
            except TypeError as conform_error:
                error = conform_error
        raise TypeError(
            f"{self.__name__} has the type signature {self._type_signature}; argument {name!r} "
            f"does not match its parameter type {type_spec}: {error}"
        ) from None

    def __repr__(self):
        signature = self._type_signature if self._type_signature is not None else "unbound"
        return f"<federated_computation {self.__name__}: {signature}>"


def federated_computation(*args):
    """Makes a ``FederatedComputation`` from a Python function of federated values.

    Use it bare (``@federated_computation``: types are bound at the first call or by
    ``.bind(...)``) or with one ``FederatedType`` per parameter
    (``@federated_computation(FederatedType(tf.float32, CLIENTS))``: traced at once).
    A function without parameters is traced at once either way.

    Args:
        *args: The function, or the parameter types.

    Returns:
        A ``FederatedComputation``, or a decorator that makes one.

    Example:
        >>> federated_computation(lambda: 'Hello, World!')()
        'Hello, World!'
        >>> from fedteach.federated import federated_sum, federated_average
        >>> @federated_computation
        ... def aggregate(metrics):
        ...     return {'num_examples': federated_sum(metrics.num_examples),
        ...             'loss': federated_average(metrics.loss, metrics.num_examples)}
        >>> result = aggregate([{'num_examples': 2.0, 'loss': 1.0}, {'num_examples': 6.0, 'loss': 3.0}])
        >>> {name: float(value) for name, value in result.items()}
        {'loss': 2.5, 'num_examples': 8.0}
        >>> print(aggregate.type_signature)
        ({<loss=float32,num_examples=float32>}@CLIENTS -> <loss=float32@SERVER,num_examples=float32@SERVER>)
    """
    if len(args) == 1 and callable(args[0]) and not isinstance(args[0], (type, Type)):
        return FederatedComputation(args[0])
    return lambda fn: FederatedComputation(fn, args)


def _argument_type(value):
    if isinstance(value, FederatedValue):
        return value.type
    if isinstance(value, list):
        return federated_value_list(value).type
    return FederatedType(infer_type(value), SERVER)


def _unwrap(result):
    if isinstance(result, FederatedValue):
        return result.value
    items = structures.named_items(result)
    if items is not None:
        if type(result) is dict:
            items = sorted(items)
        return structures.build(type(result), [n for n, _ in items], [_unwrap(v) for _, v in items])
    if isinstance(result, (tuple, list)):
        return structures.build(type(result), [None] * len(result), [_unwrap(v) for v in result])
    return result
