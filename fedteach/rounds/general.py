"""The general round engine: one compiled function per client dataset.

It takes any :class:`fedteach.Model` and any ``tf.data`` pipeline. Each client
starts from the server's weights, trains through its dataset with the client
optimizer inside a ``tf.function`` (traced once per dataset structure and then
reused across clients and rounds), and reports its new weights, the number of
examples it trained on and its local metrics.

The dataset is iterated without ``tf.data``'s static graph optimizations,
which otherwise rewrite the pipeline every time a client's iterator is
created and cost more than they save on a client's few thousand examples.
The train step is deliberately not XLA-compiled: XLA compiles once per batch
shape, and every client's last, smaller batch would cost a compilation.
"""
from __future__ import annotations

import tensorflow as tf

from fedteach.rounds.state import ModelWeights


class ClientRunner:
    """Runs local training or evaluation of one client at a time.

    Example:
        >>> import keras, numpy as np, tensorflow as tf, fedteach as ft
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer='zeros')])
        >>> model = ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     {'x': tf.TensorSpec([None, 4], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)})
        >>> runner = ClientRunner(model, keras.optimizers.SGD(0.1))
        >>> data = tf.data.Dataset.from_tensor_slices({'x': np.ones((6, 4), 'float32'),
        ...                                            'y': np.ones((6, 1), 'int32')}).batch(3)
        >>> weights, n, outputs = runner.train(runner.weights(), data)
        >>> n, int(outputs['num_examples'])
        (6, 6)
    """

    def __init__(self, model, optimizer=None, proximal_mu: float = 0.0):
        self.model = model
        self.optimizer = optimizer
        self.proximal_mu = float(proximal_mu)  # FedProx: local gradient += mu * (w - w_global)
        self._anchor = [tf.Variable(v.numpy(), trainable=False) for v in model.trainable_variables] if proximal_mu else []
        self._initial_local = [v.numpy() for v in model.local_variables]
        if optimizer is not None:
            optimizer.build(model.trainable_variables)
            self._initial_optimizer = [v.numpy() for v in optimizer.variables]
        self.trace_count = 0
        self._train_fn = tf.function(self._train_loop)
        self._evaluate_fn = tf.function(self._evaluate_loop)

    def weights(self) -> ModelWeights:
        """The model's current weights as plain arrays."""
        m = self.model
        return ModelWeights.from_lists(
            [v.numpy() for v in m.trainable_variables], [v.numpy() for v in m.non_trainable_variables],
            _names(m, "trainable"), _names(m, "non_trainable"))

    def load(self, weights: ModelWeights) -> None:
        """Sets the model's variables to ``weights`` and resets the local metrics."""
        for v, w in zip(self.model.trainable_variables, weights.trainable.values()):
            v.assign(w)
        for v, w in zip(self.model.non_trainable_variables, weights.non_trainable.values()):
            v.assign(w)
        for v, w in zip(self.model.local_variables, self._initial_local):
            v.assign(w)

    def train(self, weights: ModelWeights, dataset):
        """Trains from ``weights`` on one client's ``dataset``.

        Returns ``(new_weights, num_examples_trained, local_outputs)``.
        """
        self.load(weights)
        for v, w in zip(self.optimizer.variables, self._initial_optimizer):
            v.assign(w)
        for v, w in zip(self._anchor, weights.trainable.values()):
            v.assign(w)
        n = int(self._train_fn(dataset.with_options(_OPTIONS)))
        return self.weights(), n, self.model.report_local_outputs()

    def evaluate(self, weights: ModelWeights, dataset):
        """Runs the forward pass over ``dataset``; returns ``(num_examples, local_outputs)``."""
        self.load(weights)
        n = int(self._evaluate_fn(dataset.with_options(_OPTIONS)))
        return n, self.model.report_local_outputs()

    def _train_loop(self, dataset):
        self.trace_count += 1
        n = tf.constant(0, tf.int64)
        for batch in dataset:
            n += self._train_step(batch)
        return n

    def _train_step(self, batch):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            output = self.model.forward_pass(batch, training=True)
        grads = tape.gradient(output.loss, variables)
        if self.proximal_mu:
            grads = [g if g is None else g + self.proximal_mu * (v - a)
                     for g, v, a in zip(grads, variables, self._anchor)]
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return _batch_size(output, batch)

    def _evaluate_loop(self, dataset):
        self.trace_count += 1
        n = tf.constant(0, tf.int64)
        for batch in dataset:
            output = self.model.forward_pass(batch, training=False)
            n += _batch_size(output, batch)
        return n


_OPTIONS = tf.data.Options()
_OPTIONS.experimental_optimization.apply_default_optimizations = False


def _batch_size(output, batch):
    if output.num_examples is not None:
        return tf.cast(output.num_examples, tf.int64)
    return tf.cast(tf.shape(tf.nest.flatten(output.predictions)[0])[0], tf.int64)


def _names(model, kind: str) -> list[str]:
    names = getattr(model, f"{kind}_names", None)
    if names is not None:
        return names
    from fedteach.models.keras_model import variable_names
    return variable_names(getattr(model, f"{kind}_variables"))
