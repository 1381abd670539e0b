"""Federated SGD (McMahan et al., 2017's baseline) on the same ``initialize``/``next`` interface.

A round: the server broadcasts its model; every client computes the average
gradient of the loss over all of its data at the server's weights (it does
not move them); the server averages the clients' gradients weighted by their
numbers of examples and applies the average with the server optimizer
(default ``SGD(0.1)``): one step of large-batch SGD per round.

In fedteach's terms a client sends the update ``-g_c`` (as if it had taken
one SGD step of learning rate 1), so FedSGD is FedAvg with one piece
changed, the client's work: the server optimizer and any aggregator
(clipping, DP, compression) apply unchanged. Both engines serve it: the fast
one runs all clients' gradient passes side by side in one compiled function.
"""
from __future__ import annotations

import collections

import keras
import numpy as np
import tensorflow as tf

from fedteach.rounds import fast, general, grouping
from fedteach.rounds.fedavg import FederatedAveraging, ServerOptimizer, _skip_empty, build_server
from fedteach.rounds.process import check_model_fn, seed_initial_weights
from fedteach.rounds.state import ModelWeights

__all__ = ["build_federated_sgd_process"]


def build_federated_sgd_process(model_fn, *, server_optimizer_fn=None, seed: int = 0, engine: str = "auto",
                                verbose: bool = False, aggregator=None,
                                memory_budget_mb: float = grouping.DEFAULT_MEMORY_BUDGET_MB):
    """Builds Federated SGD as an :class:`IterativeProcess`.

    Args:
        model_fn: a function that builds a new :class:`fedteach.Model`.
        server_optimizer_fn: returns the Keras optimizer that applies the
            clients' average gradient; default ``SGD(learning_rate=0.1)``.
            Keyword-only: FedSGD's clients have no optimizer, and for the
            other builders the second positional argument is the client's.
        seed: fixes the initial weights.
        engine: ``'auto'``, ``'fast'`` or ``'general'``, as for FedAvg.
        verbose: print which engine each round took.
        aggregator: an ``ft.aggregators`` Aggregator for the clients'
            updates ``-g_c`` (default: the example-weighted mean).
        memory_budget_mb: as for FedAvg: a round with more clients than
            fit runs them in groups (McMahan et al.'s FedSGD baseline takes
            every client in every round).

    The client datasets are read once per round in full (their ``repeat``
    only repeats examples, which leaves the average gradient unchanged).

    Example:
        >>> import fedteach as ft, keras
        >>> train, _ = ft.load_offline_digits(num_clients=3, seed=0)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax',
        ...                                                             kernel_initializer='zeros')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02),
        ...                 metrics=[keras.metrics.SparseCategoricalAccuracy()])
        ...     return ft.from_compiled_keras_model(net, next(iter(data[0])))
        >>> process = build_federated_sgd_process(model_fn)
        >>> state, metrics = process.next(process.initialize(), data)
        >>> process.path, round(float(metrics['loss']), 4)  # the loss at the zero weights: ln(10)
        ('fast', 2.3026)
    """
    if engine not in ("auto", "fast", "general"):
        raise ValueError(f"engine must be 'auto', 'fast' or 'general', got {engine!r}")
    seed_initial_weights(seed)
    model = check_model_fn(model_fn)
    server = build_server(server_optimizer_fn, model, default_learning_rate=0.1)
    # The client optimizer is never stepped: SGD(1.0) only turns a gradient g into the update -g.
    return FederatedSGD(model, keras.optimizers.SGD(1.0), server, seed=seed, engine=engine, verbose=verbose,
                        aggregator=aggregator, memory_budget_mb=memory_budget_mb).process


class GradientTrainer(fast.FastTrainer):
    """The fast engine's compiled round, computing each client's average gradient instead of training.

    Returns, per client, the "model" ``w - g_c`` (and the weighted average of
    those), with the same metric outputs as :class:`fast.FastTrainer`.
    """

    def _round(self, trainable, non_trainable, examples, index, mask, weights, lr, mu):
        self.trace_count += 1
        clients, tv, ntv, ms, forward = self._start(trainable, non_trainable, index)
        acc = [tf.zeros_like(w) for w in tv]

        def step(t, acc, ntv, ms, loss_sum):
            rows, m = index[:, t], mask[:, t]
            x, y = tf.gather(examples["x"], rows), tf.gather(examples["y"], rows)
            count = tf.reduce_sum(m, axis=1)
            with tf.GradientTape() as tape:
                tape.watch(tv)
                preds, ntv_new, per_example = tf.vectorized_map(forward, (tv, ntv, x, y))
                summed = tf.reduce_sum(per_example * m, axis=1)   # [clients]
                total = tf.reduce_sum(summed)
            grads = tape.gradient(total, tv)                       # per client: sum of per-example gradients
            ntv_new = fast._where_active(count, ntv_new, ntv)
            ms_new = self._update_metrics(ms, y, preds, m, count)
            ntv_new = [tf.ensure_shape(a, b.shape) for a, b in zip(ntv_new, ntv)]  # pfor may drop static shapes
            return t + 1, [a + g for a, g in zip(acc, grads)], ntv_new, ms_new, loss_sum + summed

        real_steps = tf.reduce_sum(tf.cast(tf.reduce_any(mask > 0, axis=[0, 2]), tf.int32))  # the padding is a suffix
        _, acc, ntv, ms, loss_sum = tf.while_loop(
            lambda t, *_: t < real_steps, step, (tf.constant(0), acc, ntv, ms, tf.zeros([clients])))
        n = tf.maximum(tf.reduce_sum(mask, axis=[1, 2]), 1.0)
        per_client = lambda a: tf.reshape(n, tf.concat([[-1], tf.ones_like(tf.shape(a)[1:])], 0))
        models = [w - lr * a / per_client(a) for w, a in zip(tv, acc)]
        share = weights / tf.reduce_sum(weights)
        average = lambda ws: [tf.tensordot(share, w, axes=1) for w in ws]
        return average(models), average(ntv), loss_sum, ms, models


class GradientRunner:
    """The general engine's client work for FedSGD: the average gradient over one client's dataset."""

    def __init__(self, runner: general.ClientRunner):
        self.runner = runner
        self.sums = [tf.Variable(tf.zeros_like(v), trainable=False) for v in runner.model.trainable_variables]
        self._fn = tf.function(self._loop)

    def gradient_step(self, weights: ModelWeights, dataset):
        """Returns ``(weights - average gradient, num_examples, local_outputs)`` for one client."""
        self.runner.load(weights)
        n = int(self._fn(dataset))
        after = self.runner.weights()
        trainable = collections.OrderedDict(
            (k, (w - s.numpy() / max(n, 1)).astype(w.dtype))
            for (k, w), s in zip(weights.trainable.items(), self.sums))
        return ModelWeights(trainable, after.non_trainable), n, self.runner.model.report_local_outputs()

    def _loop(self, dataset):
        self.runner.trace_count += 1
        variables = self.runner.model.trainable_variables
        for s in self.sums:
            s.assign(tf.zeros_like(s))
        n = tf.constant(0, tf.int64)
        for batch in dataset:
            with tf.GradientTape() as tape:
                output = self.runner.model.forward_pass(batch, training=True)
            size = general._batch_size(output, batch)
            grads = tape.gradient(output.loss, variables)  # of the batch's mean loss
            for s, g in zip(self.sums, grads):
                if g is not None:
                    s.assign_add(g * tf.cast(size, g.dtype))
            n += size
        return n


class FederatedSGD(FederatedAveraging):
    """The engine behind :func:`build_federated_sgd_process`: FedAvg's with the clients' work replaced."""

    def __init__(self, model, client_optimizer, server: ServerOptimizer, **kwargs):
        super().__init__(model, client_optimizer, server, **kwargs)
        if hasattr(self, "trainer"):
            self.trainer = GradientTrainer(model, 1.0)
        self.gradient_runner = GradientRunner(self.runner)

    def _general_round(self, state, federated_data, round_num):
        results = [self.gradient_runner.gradient_step(state.model, ds) for ds in federated_data]
        counts = np.array([n for _, n, _ in results], np.int64)
        _skip_empty(counts, federated_data, round_num)
        share = counts / counts.sum()
        trained = [w for w, _, _ in results]
        self._clients = ([np.stack([w.trainable[k] for w in trained]) for k in state.model.trainable], counts)
        average = ModelWeights(
            collections.OrderedDict((k, sum(s * w.trainable[k] for s, w in zip(share, trained)).astype(v.dtype))
                                    for k, v in state.model.trainable.items()),
            collections.OrderedDict((k, sum(s * w.non_trainable[k] for s, w in zip(share, trained)).astype(v.dtype))
                                    for k, v in state.model.non_trainable.items()))
        return average, [o for (_, n, o) in results if n > 0]
