"""The model interface that every federated algorithm in fedteach trains.

A :class:`Model` is what the tutorial calls ``tff.learning.Model``: variables
split into trainable, non-trainable and *local* ones (metric accumulators that
start from zero on every client), a forward pass, the local metrics a client
reports, and the federated computation that aggregates them on the server.
"""
from __future__ import annotations

import abc
from typing import Any, NamedTuple


class BatchOutput(NamedTuple):
    """What ``forward_pass`` returns for one batch.

    Example:
        >>> out = BatchOutput(loss=0.5, predictions=[3, 1])
        >>> out.num_examples is None
        True
    """

    loss: Any
    predictions: Any
    num_examples: Any = None


class Model(abc.ABC):
    """A model that fedteach can train and evaluate federatedly.

    Subclass it with plain ``tf.Variable``\\ s, as the tutorial's ``MnistModel``
    does, or get one from a Keras model with :func:`fedteach.from_keras_model`.

    Example:
        >>> import tensorflow as tf
        >>> class Const(Model):
        ...     def __init__(self):
        ...         self.w = tf.Variable(1.0)
        ...     trainable_variables = property(lambda self: [self.w])
        ...     non_trainable_variables = property(lambda self: [])
        ...     local_variables = property(lambda self: [])
        ...     input_spec = property(lambda self: {'x': tf.TensorSpec([None], tf.float32)})
        ...     def forward_pass(self, batch, training=True):
        ...         return BatchOutput(tf.reduce_mean(batch['x'] * self.w), batch['x'])
        ...     def report_local_outputs(self):
        ...         return {}
        ...     federated_output_computation = None
        >>> float(Const().forward_pass({'x': tf.constant([2.0, 4.0])}).loss)
        3.0
    """

    @property
    @abc.abstractmethod
    def trainable_variables(self) -> list:
        """Variables the client optimizer updates."""

    @property
    @abc.abstractmethod
    def non_trainable_variables(self) -> list:
        """Model variables that are not trained (e.g. batch-norm statistics)."""

    @property
    @abc.abstractmethod
    def local_variables(self) -> list:
        """Metric accumulators; reset to their initial values on every client."""

    @property
    @abc.abstractmethod
    def input_spec(self):
        """The structure of one batch: a dict of ``tf.TensorSpec``."""

    @abc.abstractmethod
    def forward_pass(self, batch, training: bool = True) -> BatchOutput:
        """Runs the model on ``batch``, updates local metrics, returns a BatchOutput."""

    @abc.abstractmethod
    def report_local_outputs(self) -> dict:
        """The client's local metrics (values eligible for aggregation).

        Built from the local variables with TensorFlow operations (a ``tf.function``, as in the tutorial):
        the general round engine calls it inside its compiled round, once per client."""

    @property
    @abc.abstractmethod
    def federated_output_computation(self):
        """A federated computation: ``{local outputs}@CLIENTS -> metrics@SERVER``."""
