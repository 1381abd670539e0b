"""Wrapping a Keras 3 model as a :class:`fedteach.Model`."""
from __future__ import annotations

import collections
import re

import keras
import numpy as np
import tensorflow as tf

from fedteach.federated import (SERVER, FederatedType, FunctionType, StructType, federated_computation,
                                federated_sum)
from fedteach.federated.intrinsics import sum_leaves
from fedteach.models.model import BatchOutput, Model


def from_keras_model(keras_model, loss, input_spec, metrics=None, optimizer=None) -> "KerasModel":
    """Wraps a Keras model for federated training and evaluation.

    Args:
        keras_model: a ``keras.Model`` taking ``batch['x']``.
        loss: a ``keras.losses.Loss``, a loss function ``(y_true, y_pred)`` or its name.
        input_spec: the structure of one batch, ``{'x': TensorSpec, 'y': TensorSpec}``.
        metrics: Keras metrics (objects or names); each client's metric state is
            summed across clients before the metric is computed, so the result is
            the metric over all examples, not an average of averages.
        optimizer: the client optimizer used by default (normally given by
            ``client_optimizer_fn`` instead).

    Example:
        >>> import keras, tensorflow as tf
        >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        >>> model = from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(),
        ...     {'x': tf.TensorSpec([None, 784], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)},
        ...     metrics=[keras.metrics.SparseCategoricalAccuracy()])
        >>> [tuple(v.shape) for v in model.trainable_variables]
        [(784, 10), (10,)]
    """
    return KerasModel(keras_model, loss, input_spec, metrics, optimizer)


def from_compiled_keras_model(keras_model, sample_batch) -> "KerasModel":
    """Wraps a compiled Keras model; its loss, metrics and optimizer are reused.

    ``sample_batch`` (one batch of the federated data) tells the structure of the
    input: its arrays' shapes with the batch dimension left open become the
    model's ``input_spec``.

    Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        >>> net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02),
        ...             metrics=['accuracy'])
        >>> batch = {'x': np.zeros((20, 784), np.float32), 'y': np.zeros((20, 1), np.int32)}
        >>> model = from_compiled_keras_model(net, batch)
        >>> model.input_spec['x']
        TensorSpec(shape=(None, 784), dtype=tf.float32, name=None)
    """
    if getattr(keras_model, "optimizer", None) is None or getattr(keras_model, "loss", None) is None:
        raise ValueError(
            "from_compiled_keras_model needs a compiled Keras model, but this one has no "
            "optimizer or loss. Call keras_model.compile(loss=..., optimizer=..., metrics=[...]) first, "
            "or use ft.from_keras_model(keras_model, loss, input_spec, metrics).")
    input_spec = _spec_from_batch(sample_batch)
    config = getattr(keras_model, "_compile_config", None)
    metrics = config.config.get("metrics") if config is not None else None
    return KerasModel(keras_model, keras_model.loss, input_spec, metrics, keras_model.optimizer)


def _spec_from_batch(sample_batch):
    if not isinstance(sample_batch, collections.abc.Mapping) or not {"x", "y"} <= set(sample_batch):
        raise ValueError(
            "sample_batch must be one batch as a dict with keys 'x' and 'y' (e.g. "
            f"next(iter(federated_train_data[0]))), got {type(sample_batch).__name__}"
            + (f" with keys {sorted(sample_batch)}" if isinstance(sample_batch, collections.abc.Mapping) else ""))
    return collections.OrderedDict(
        (key, tf.TensorSpec([None] + list(np.shape(value))[1:], tf.as_dtype(np.asarray(value).dtype)))
        for key, value in sample_batch.items())


def _fresh_metric(metric, loss):
    """A new, unshared metric object for one of the user's metrics."""
    if isinstance(metric, keras.metrics.Metric):
        return metric.__class__.from_config(metric.get_config())
    if metric in ("accuracy", "acc"):
        sparse = "sparse" in str(getattr(loss, "name", loss) or "")
        cls = keras.metrics.SparseCategoricalAccuracy if sparse or loss is None else keras.metrics.Accuracy
        return cls(name="accuracy")
    found = keras.metrics.get(metric)
    if isinstance(found, keras.metrics.Metric):
        return found
    return keras.metrics.MeanMetricWrapper(found, name=getattr(found, "__name__", str(metric)))


def variable_names(variables, prefix: str = "") -> list[str]:
    """Readable, unique names for variables: their Keras path without the model name.

    Keras numbers automatically named layers globally (``dense``, ``dense_1``,
    ... for every model built in the session); names are renumbered within the
    model so that every fresh model reads ``dense/kernel`` like the tutorial.

    Example:
        >>> import keras
        >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(2)], name='seq')
        >>> variable_names(net.trainable_variables, 'seq/')
        ['dense/kernel', 'dense/bias', 'dense_1/kernel', 'dense_1/bias']
    """
    paths = []
    for v in variables:
        path = (getattr(v, "path", None) or v.name).split(":")[0]
        paths.append(path[len(prefix):] if prefix and path.startswith(prefix) else path)
    renamed, seen = {}, {}
    for path in paths:
        layer = path.split("/")[0] if "/" in path else None
        if layer is not None and layer not in renamed:
            base = re.sub(r"_\d+$", "", layer)
            renamed[layer] = base if base not in seen else f"{base}_{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
    names = []
    for path in paths:
        layer = path.split("/")[0] if "/" in path else None
        name = renamed[layer] + path[len(layer):] if layer is not None else path
        base, i = name, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


class KerasModel(Model):
    """A Keras model seen through the :class:`fedteach.Model` interface."""

    def __init__(self, keras_model, loss, input_spec, metrics=None, optimizer=None):
        if not isinstance(keras_model, keras.Model):
            raise TypeError(f"expected a keras.Model, got {type(keras_model).__name__}")
        if not isinstance(input_spec, collections.abc.Mapping) or not {"x", "y"} <= set(input_spec):
            raise ValueError(
                "input_spec must be a dict with keys 'x' (the model input) and 'y' (the labels), "
                f"got {input_spec!r}. Example: {{'x': tf.TensorSpec([None, 784], tf.float32), "
                "'y': tf.TensorSpec([None, 1], tf.int32)}")
        self.keras_model = keras_model
        self.loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        self._input_spec = collections.OrderedDict((k, input_spec[k]) for k in input_spec)
        self.metrics = [_fresh_metric(m, loss) for m in (metrics or [])]
        self.optimizer = optimizer
        if not keras_model.built:
            keras_model.build(tuple(input_spec["x"].shape))
        self._loss_sum = tf.Variable(0.0, trainable=False, name="loss_sum")
        self._num_examples = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_examples")
        for m in self.metrics:  # create their variables now, outside any tf.function
            if not m.variables:
                m.update_state(np.zeros([1] + list(input_spec["y"].shape)[1:], input_spec["y"].dtype.as_numpy_dtype),
                               np.zeros([1] + list(keras_model.output_shape)[1:], np.float32))
            m.reset_state()
        prefix = keras_model.name + "/"
        self.trainable_names = variable_names(self.trainable_variables, prefix)
        self.non_trainable_names = variable_names(self.non_trainable_variables, prefix)
        self._aggregation = _make_metric_aggregation(self.metrics)

    @property
    def trainable_variables(self):
        return list(self.keras_model.trainable_variables)

    @property
    def non_trainable_variables(self):
        return [v for v in self.keras_model.non_trainable_variables if "seed_generator" not in v.path]

    @property
    def local_variables(self):
        return [self._loss_sum, self._num_examples] + [v for m in self.metrics for v in m.variables]

    @property
    def input_spec(self):
        return self._input_spec

    def mean_loss(self, y_true, y_pred):
        """The loss of a batch, averaged over its examples."""
        return tf.reduce_mean(self.loss(y_true, y_pred))

    def per_example_loss(self, y_true, y_pred):
        """The loss of every example of a batch (shape ``[batch]``)."""
        if isinstance(self.loss, keras.losses.Loss):
            values = self.loss.call(y_true, y_pred)
        else:
            values = self.loss(y_true, y_pred)
        if values.shape.rank == 0:  # a loss that averages itself: apply it per example
            values = tf.vectorized_map(lambda yp: self.loss(yp[0][None], yp[1][None]), (y_true, y_pred))
        values = tf.cast(values, tf.float32)
        return tf.reshape(values, [tf.shape(y_pred)[0], -1])[:, 0] if values.shape.rank != 1 else values

    def forward_pass(self, batch, training=True):
        predictions = self.keras_model(batch["x"], training=training)
        loss = self.mean_loss(batch["y"], predictions)
        num_examples = tf.shape(predictions)[0]
        self._loss_sum.assign_add(loss * tf.cast(num_examples, tf.float32))
        self._num_examples.assign_add(tf.cast(num_examples, tf.int64))
        for m in self.metrics:
            m.update_state(batch["y"], predictions)
        return BatchOutput(loss, predictions, num_examples)

    def report_local_outputs(self):
        """Each metric's state, ``loss: [sum, count]`` and ``num_examples``: NumPy values, or tensors when traced."""
        outputs = collections.OrderedDict()
        for m in self.metrics:
            outputs[m.name] = [tf.convert_to_tensor(v) for v in m.variables]
        outputs["loss"] = [tf.convert_to_tensor(self._loss_sum), tf.cast(self._num_examples, tf.float32)]
        outputs["num_examples"] = tf.convert_to_tensor(self._num_examples)
        return tf.nest.map_structure(lambda t: t.numpy(), outputs) if tf.executing_eagerly() else outputs

    @property
    def federated_output_computation(self):
        return self._aggregation


def _make_metric_aggregation(metrics):
    """The federated computation that turns clients' metric states into metrics.

    Each metric's state (e.g. ``total`` and ``count``) is summed over clients
    with ``federated_sum``; the server then finalizes it with the metric's own
    ``result`` on the summed state.
    """
    finalizers = {m.name: m for m in metrics}

    def finalize(summed):
        out = collections.OrderedDict()
        for name, state in summed.items():
            if name == "num_examples":
                out[name] = int(state)
            elif name == "loss":
                out[name] = float(state[0] / max(state[1], 1.0))
            elif isinstance(finalizers[name], keras.metrics.Mean):  # total / count, as Mean.result computes it
                total, count = (np.float32(s) for s in state)
                out[name] = float(total / count) if count else 0.0
            else:
                out[name] = float(finalizers[name].stateless_result([tf.constant(s) for s in state]))
        return out

    @federated_computation
    def aggregate_metrics_across_clients(local_outputs):
        return federated_sum(local_outputs)

    result = StructType([(m.name, FederatedType(tf.float32, SERVER)) for m in metrics]
                        + [("loss", FederatedType(tf.float32, SERVER)),
                           ("num_examples", FederatedType(tf.int64, SERVER))])
    return _Finalized(aggregate_metrics_across_clients, finalize, result)


def _summed(type_spec, members):
    """``federated_sum``'s sum of the clients' ``members`` of ``type_spec``; structures are lists here."""
    if isinstance(type_spec, StructType):
        return [_summed(t, [m[i] for m in members]) for i, (_, t) in enumerate(type_spec)]
    return sum_leaves(type_spec, members)


class _Finalized:
    """A federated computation followed by a server-side finalization into ``result_type``."""

    def __init__(self, computation, finalize, result_type):
        self.computation, self.finalize, self.result_type = computation, finalize, result_type

    def __call__(self, local_outputs):
        return self.finalize(self.computation(local_outputs))

    def of_trusted(self, outputs: list):
        """The metrics of per-client outputs that a fast engine built in the bound parameter type: summed as
        ``federated_sum`` sums them, with the same arithmetic, but without checking their type again and
        walking the generic structures (0.3 ms of a ten-client round).

        Example:
            >>> import keras, tensorflow as tf
            >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation='softmax')])
            >>> model = from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(),
            ...     {'x': tf.TensorSpec([None, 2], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)})
            >>> outputs = [{'loss': [np.float32(3.0), np.float32(2.0)], 'num_examples': np.int64(2)},
            ...            {'loss': [np.float32(1.0), np.float32(2.0)], 'num_examples': np.int64(2)}]
            >>> aggregate = model.federated_output_computation
            >>> dict(aggregate(outputs))  # checks the outputs and binds the parameter type
            {'loss': 1.0, 'num_examples': 4}
            >>> dict(aggregate.of_trusted(outputs))
            {'loss': 1.0, 'num_examples': 4}
        """
        member = self.computation.type_signature.parameter.member
        return self.finalize(collections.OrderedDict(
            (name, _summed(t, [o[name] for o in outputs])) for name, t in member))

    def bind(self, *types):
        self.computation.bind(*types)
        return self

    @property
    def type_signature(self):
        return FunctionType(self.computation.type_signature.parameter, self.result_type)
