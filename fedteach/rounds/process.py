"""Computations with type signatures, and the ``initialize``/``next`` pair."""
from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf

from fedteach.federated import (CLIENTS, SERVER, FederatedType, FunctionType, SequenceType, StructType,
                                to_type)
from fedteach.models.model import Model


class Computation:
    """A Python callable with a federated ``type_signature``.

    Example:
        >>> from fedteach.federated import FunctionType, FederatedType, SERVER, to_type
        >>> hello = Computation(lambda: 'Hello, World!', FunctionType(None, FederatedType(to_type(str), SERVER)))
        >>> hello()
        'Hello, World!'
    """

    def __init__(self, fn: Callable, type_signature, name: str | None = None):
        self._fn = fn
        self.type_signature = type_signature
        self.__name__ = name or getattr(fn, "__name__", "computation")

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __repr__(self):
        return f"<Computation {self.__name__}: {self.type_signature}>"


@dataclasses.dataclass(frozen=True)
class IterativeProcess:
    """A pair of computations: ``initialize() -> state`` and ``next(state, data) -> (state, metrics)``."""

    initialize: Computation
    next: Computation


def check_model_fn(model_fn) -> Model:
    """Calls ``model_fn`` and checks that it built a fresh :class:`fedteach.Model`.

    Example:
        >>> check_model_fn(42)
        Traceback (most recent call last):
        ...
        TypeError: model_fn must be a function that builds a new model (e.g. `def model_fn(): return ft.from_keras_model(...)`), got int.
    """
    if isinstance(model_fn, Model):
        raise TypeError(
            "model_fn must be a constructor, not an already built model: pass `model_fn`, not "
            "`model_fn()`. fedteach calls it itself, as the tutorial explains, so that the model's "
            "variables are created under its control.")
    if not callable(model_fn):
        raise TypeError("model_fn must be a function that builds a new model (e.g. `def model_fn(): "
                        f"return ft.from_keras_model(...)`), got {type(model_fn).__name__}.")
    model = model_fn()
    if not isinstance(model, Model):
        raise TypeError(f"model_fn returned a {type(model).__name__}; it must return a fedteach Model "
                        "(wrap a Keras model with ft.from_keras_model or ft.from_compiled_keras_model).")
    return model


def batch_type(model: Model):
    """The type of one client's data: a sequence of the model's input batches."""
    return SequenceType(to_type(model.input_spec))


def clients_data_type(model: Model):
    """``{<x=...,y=...>*}@CLIENTS``: the federated data a round takes."""
    return FederatedType(batch_type(model), CLIENTS)


def metrics_type(model: Model, local_outputs):
    """The result type of the model's metric aggregation, as a struct of SERVER values."""
    computation = model.federated_output_computation
    computation.bind(FederatedType(to_type(local_outputs), CLIENTS))
    return computation.type_signature.result


def function_type(parameters: list, result) -> FunctionType:
    """A function type with several parameters (a struct of them) or none."""
    if not parameters:
        return FunctionType(None, result)
    if len(parameters) == 1:
        return FunctionType(parameters[0], result)
    return FunctionType(StructType([(None, p) for p in parameters]), result)


def server_type(value):
    """``T@SERVER`` for a plain value (e.g. a ServerState)."""
    return FederatedType(to_type(value), SERVER)


def is_finite(arrays) -> bool:
    """True when every array in ``arrays`` is free of NaN and Inf."""
    return all(bool(tf.reduce_all(tf.math.is_finite(tf.cast(a, tf.float32)))) for a in arrays)
