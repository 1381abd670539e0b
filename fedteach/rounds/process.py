"""Computations with type signatures, and the ``initialize``/``next`` pair."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Mapping
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from fedteach.federated import (CLIENTS, SERVER, FederatedType, FederatedValue, FunctionType, SequenceType,
                                StructType, to_type)
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


_MODEL_INITIALIZED = contextvars.ContextVar("fedteach_model_initialized", default=False)


def seed_initial_weights(seed: int) -> None:
    """Seeds what a ``model_fn`` draws its initial weights from (``keras.utils.set_random_seed``): a process
    builder calls it before ``model_fn``, so that the same seed gives the same initial weights. Within
    :func:`model_already_initialized` it does nothing.

    Example:
        >>> import keras
        >>> seed_initial_weights(0); a = keras.random.uniform((2,))
        >>> seed_initial_weights(0); b = keras.random.uniform((2,))
        >>> bool((a == b).numpy().all())
        True
    """
    if not _MODEL_INITIALIZED.get():
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def model_already_initialized(active: bool = True):
    """Process builders inside it do not reseed (see :func:`seed_initial_weights`): for a ``model_fn`` that
    returns a model built and initialized before, whose weights the process replaces anyway (an
    ``Experiment`` continuing from a state). Reseeding would cost more than the round: TensorFlow's
    ``tf.random.set_seed`` clears the eager kernel cache, so every compiled function (the rounds, the
    evaluation, the server optimizer's step) is instantiated again at its next call (40 ms for Adam's step).
    Per thread (a context variable): a background warm-up does not switch it for the notebook's thread.

    Example:
        >>> with model_already_initialized():
        ...     seed_initial_weights(0)  # nothing to seed: the weights come from elsewhere
    """
    token = _MODEL_INITIALIZED.set(bool(active))
    try:
        yield
    finally:
        _MODEL_INITIALIZED.reset(token)


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


def aggregate_trusted(aggregate, outputs: list):
    """``aggregate(outputs)`` for per-client outputs that a fast engine built in the type ``aggregate`` is bound
    to: a Keras model's aggregation sums them directly (``of_trusted``, the same arithmetic as
    ``federated_sum``); any other computation takes them without a second type check.

    Example:
        >>> from fedteach.federated import federated_computation, federated_sum
        >>> total = federated_computation(lambda n: federated_sum(n))
        >>> int(aggregate_trusted(total.bind(FederatedType(np.int64, CLIENTS)), [np.int64(2), np.int64(3)]))
        5
    """
    if hasattr(aggregate, "of_trusted"):
        return aggregate.of_trusted(outputs)
    return aggregate(FederatedValue._trusted(aggregate.type_signature.parameter, outputs))


def function_type(parameters: list, result) -> FunctionType:
    """A function type with several parameters (a struct of them) or none."""
    if not parameters:
        return FunctionType(None, result)
    if len(parameters) == 1:
        return FunctionType(parameters[0], result)
    return FunctionType(StructType([(None, p) for p in parameters]), result)


def server_type(value):
    """``T@SERVER`` for a plain value (e.g. a ServerState) or a type ``T``."""
    return FederatedType(to_type(value), SERVER)


def is_finite(arrays) -> bool:
    """True when every array in ``arrays`` is free of NaN and Inf."""
    return all(bool(np.isfinite(a if isinstance(a, np.ndarray) and a.dtype.kind == "f" else
                                np.asarray(a, np.float64)).all()) for a in arrays)


def client_name(dataset, index: int) -> str:
    """How errors name a client: its id when the dataset knows it, else its position."""
    client_id = getattr(dataset, "client_id", None)
    return repr(client_id) if client_id is not None else f"#{index} (position in federated_data)"


def check_positive(name: str, value, hint: str) -> None:
    """Raises a ValueError when a hyperparameter is not a finite number > 0.

    Example:
        >>> check_positive('client learning rate', -0.1, 'e.g. SGD(learning_rate=0.02)')
        Traceback (most recent call last):
        ...
        ValueError: the client learning rate must be a positive number, got -0.1. Use a small positive value, e.g. SGD(learning_rate=0.02).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # not a plain number (e.g. a schedule): nothing to check here
    if not number > 0 or number == float("inf"):
        raise ValueError(f"the {name} must be a positive number, got {number:.6g}. "
                         f"Use a small positive value, {hint}.")


def check_client_datasets(model: Model, federated_data, check_specs: bool = True, check_labels: bool = True) -> None:
    """Checks a round's client datasets against the model before any work starts.

    * a recorded ``batch(0)`` (or negative) is refused;
    * with ``check_specs``, each dataset's ``element_spec`` must have the
      structure of ``model.input_spec``, with compatible shapes (the error names
      the client and the field);
    * with ``check_labels``, for a Keras model with a sparse categorical loss, the raw labels of a
      client dataset built by ``ClientData`` must lie in ``[0, classes)`` (checked
      when the recipe shows which raw field becomes ``y``: no map, or the map of
      ``preprocess_for_tutorial``).

    Example:
        >>> import numpy as np, tensorflow as tf, keras, fedteach as ft
        >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation='softmax')])
        >>> model = ft.from_keras_model(net, 'sparse_categorical_crossentropy',
        ...     {'x': tf.TensorSpec([None, 3], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)})
        >>> ds = tf.data.Dataset.from_tensor_slices({'x': np.zeros((4, 3), np.float32)}).batch(2)
        >>> check_client_datasets(model, [ds])
        Traceback (most recent call last):
        ...
        ValueError: client #0 (position in federated_data): its batches have fields ['x'] but the model's input_spec expects ['x', 'y']. Make the preprocess function's map return exactly these fields.
    """
    for index, dataset in enumerate(federated_data):
        who = client_name(dataset, index)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"client {who}: expected a tf.data.Dataset of batches, got {type(dataset).__name__}. "
                            "Build the federated data with ft.make_federated_data(client_data, client_ids, "
                            "preprocess).")
        if check_specs:
            _check_spec(who, dataset.element_spec, model.input_spec)
        if check_labels:
            _check_labels(who, dataset, model)


def _check_spec(who: str, element_spec, input_spec) -> None:
    if isinstance(input_spec, Mapping) and isinstance(element_spec, Mapping):
        if set(element_spec) != set(input_spec):
            raise ValueError(f"client {who}: its batches have fields {sorted(element_spec)} but the model's "
                             f"input_spec expects {sorted(input_spec)}. Make the preprocess function's map "
                             "return exactly these fields.")
        pairs = [(key, element_spec[key], input_spec[key]) for key in input_spec]
    else:
        try:
            tf.nest.assert_same_structure(element_spec, input_spec)
        except (TypeError, ValueError):
            raise ValueError(f"client {who}: its batches have the structure {element_spec} but the model's "
                             f"input_spec is {input_spec}. Make the preprocess function return that "
                             "structure.") from None
        pairs = [(f"[{i}]", e, s) for i, (e, s) in enumerate(zip(tf.nest.flatten(element_spec),
                                                                  tf.nest.flatten(input_spec)))]
    for key, got, expected in pairs:
        got_shape, want = tf.TensorShape(getattr(got, "shape", None)), tf.TensorShape(expected.shape)
        if got_shape.is_compatible_with(want):
            continue
        hint = "Reshape it in the preprocess function's map."
        if got_shape.rank is not None and want.rank is not None and got_shape.rank == want.rank - 1:
            hint = "Are the examples batched? Add .batch(batch_size) at the end of the preprocess function."
        raise ValueError(f"client {who}, field {key!r}: batches have shape {_shape(got_shape)} but the model's "
                         f"input_spec expects {_shape(want)} (None: any size). {hint}")


def _shape(shape) -> str:
    return "unknown" if shape.rank is None else str(shape.as_list())


def num_classes(model: Model) -> int | None:
    """The number of classes of a Keras model with a sparse categorical loss, else None."""
    keras_model = getattr(model, "keras_model", None)
    loss = getattr(model, "loss", None)
    name = getattr(loss, "name", None) or getattr(loss, "__name__", "") or ""
    if keras_model is None or "sparse_categorical" not in str(name):
        return None
    try:
        units = keras_model.output_shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return int(units) if isinstance(units, int) and units > 1 else None


def _label_field(dataset) -> str | None:
    """The raw field that becomes the batches' ``y``, when the recipe makes it certain.

    With no map step the raw ``y`` is used as is; ``preprocess_for_tutorial``'s
    map marks the field it copies (``label``). Any other map may transform the
    labels, so they are not checked here (the fast engine checks the mapped ones).
    """
    maps = [step.args[0] for step in getattr(dataset, "steps", ()) if step.kind == "map"]
    if not maps:
        return "y"
    fields = {getattr(fn, "label_field", None) for fn in maps}
    return fields.pop() if len(fields) == 1 and None not in fields else None


def _check_labels(who: str, dataset, model: Model) -> None:
    classes = num_classes(model)
    source = getattr(dataset, "source", None)
    field = _label_field(dataset)
    if classes is None or not isinstance(source, Mapping) or field not in source:
        return
    labels = np.asarray(source[field])
    if not np.issubdtype(labels.dtype, np.integer) or not labels.size:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        bad = high if high >= classes else low
        raise ValueError(f"client {who}, field {field!r}: label {bad} is outside the model's {classes} classes "
                         f"(labels must be 0..{classes - 1}; this client's labels span {low}..{high}). A "
                         "sparse categorical loss would silently give a wrong or NaN loss. Give the last "
                         f"layer as many units as there are classes (at least {high + 1}), or fix the labels.")
