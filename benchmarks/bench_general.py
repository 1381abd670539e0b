"""Round-time benchmark of fedteach's general engine against the compute bound of ``bench_rounds.py``.

Run: ``python benchmarks/bench_general.py`` (a few minutes, one process);
``python benchmarks/bench_general.py W2`` runs only the workloads whose names start so.

The general engine runs any ``ft.Model`` on any pipeline. Two models go through it here:

* ``general/mnist``: the tutorial's hand-written ``MnistModel`` (notebook 4: plain ``tf.Variable``\\ s,
  a ``tf.function`` forward pass that updates its own metric variables), as the course runs it;
* ``general/keras``: the same linear model as a wrapped Keras model, forced onto the general engine.

Workloads W1 (the tutorial: 3 clients x 10 epochs, shuffle 500, batch 20; datasets built anew every round)
and W2 (10 random clients of an EMNIST-sized HDF5 file, 1 epoch) are ``bench_rounds.py``'s, and so are
the bound (the round's batches in memory beforehand, one XLA function over all clients side by side) and
the measurement (``bench_rounds.measure``: every engine and the bound take turns over the rounds three
times; medians over all rounds after the first). Each line gives the engine's median round time, its
ratio to the bound measured in the same process, and the goal of fedteach's issue 18: at least 3x faster
than TensorFlow Federated 0.87, which took 86 ms (W1) and 264 ms (W2) a round on this kind of machine
(measured in an older environment; TFF no longer installs next to TF 2.21), i.e. W1 <= 30 ms, W2 <= 90 ms.
A final check runs each general engine twice from the same seed and says whether the metrics are equal.
"""
from __future__ import annotations

import collections
import datetime
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fedteach as ft  # noqa: E402  (first: TensorFlow then starts quiet)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_rounds import (LR, BoundRun, FedteachRun, Workload, emnist_sized_clients, linear_model,  # noqa: E402
                          measure)

GOALS_MS = {"W1": 30.0, "W2": 90.0}  # 3x faster than TFF 0.87's 86 ms and 264 ms


class MnistModel(ft.Model):
    """The tutorial's hand-written model (notebook 4), with zero initial weights like ``linear_model``."""

    def __init__(self):
        self.weights = tf.Variable(tf.zeros((784, 10)), name="weights")
        self.bias = tf.Variable(tf.zeros(10), name="bias")
        self.num_examples = tf.Variable(0.0, trainable=False)
        self.loss_sum = tf.Variable(0.0, trainable=False)
        self.accuracy_sum = tf.Variable(0.0, trainable=False)

    trainable_variables = property(lambda self: [self.weights, self.bias])
    non_trainable_variables = property(lambda self: [])
    local_variables = property(lambda self: [self.num_examples, self.loss_sum, self.accuracy_sum])
    input_spec = property(lambda self: collections.OrderedDict(
        x=tf.TensorSpec([None, 784], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)))

    @tf.function
    def forward_pass(self, batch, training=True):
        y = tf.nn.softmax(tf.matmul(batch["x"], self.weights) + self.bias)
        predictions = tf.cast(tf.argmax(y, 1), tf.int32)
        labels = tf.reshape(batch["y"], [-1])
        loss = -tf.reduce_mean(tf.reduce_sum(tf.one_hot(labels, 10) * tf.math.log(y), axis=[1]))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, labels), tf.float32))
        n = tf.cast(tf.size(batch["y"]), tf.float32)
        self.num_examples.assign_add(n)
        self.loss_sum.assign_add(loss * n)
        self.accuracy_sum.assign_add(accuracy * n)
        return ft.BatchOutput(loss=loss, predictions=predictions)

    @tf.function
    def report_local_outputs(self):
        return collections.OrderedDict(num_examples=self.num_examples, loss=self.loss_sum / self.num_examples,
                                       accuracy=self.accuracy_sum / self.num_examples)

    @property
    def federated_output_computation(self):
        return aggregate_mnist_metrics


@ft.federated_computation
def aggregate_mnist_metrics(metrics):
    return {"num_examples": ft.federated_sum(metrics.num_examples),
            "loss": ft.federated_average(metrics.loss, metrics.num_examples),
            "accuracy": ft.federated_average(metrics.accuracy, metrics.num_examples)}


class GeneralRun(FedteachRun):
    """The general engine on a workload, with the hand-written model or the Keras one."""

    def __init__(self, w: Workload, model: str):
        super().__init__(w, "general")
        self.model, self.name = model, f"general/{model}"

    def start(self) -> float:
        start = time.perf_counter()
        model_fn = MnistModel if self.model == "mnist" else _keras_model_fn
        self.process = ft.build_federated_averaging_process(
            model_fn, client_optimizer_fn=lambda: keras.optimizers.SGD(LR), engine="general")
        self.state, self.metrics = self.process.next(self.process.initialize(), self.w.data(0))
        return time.perf_counter() - start

    def history(self, rounds: int) -> list:
        """Metrics of rounds 1..``rounds`` of a fresh process (seed 0)."""
        self.start()
        history = [dict(self.metrics)]
        for r in range(1, rounds):
            self.state, metrics = self.process.next(self.state, self.w.data(r))
            history.append(dict(metrics))
        return history


def _keras_model_fn():
    return ft.from_keras_model(linear_model(), keras.losses.SparseCategoricalCrossentropy(),
                               MnistModel().input_spec, metrics=[keras.metrics.SparseCategoricalAccuracy()])


def main():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  machine {cpu}, {os.cpu_count()} cores  "
          f"TF {tf.__version__}  Keras {keras.__version__}  load average {os.getloadavg()[0]:.1f}")
    wanted = sys.argv[1:]
    with tempfile.TemporaryDirectory() as folder:
        tutorial = ft.ClientData.from_arrays(ft.make_emnist_like_clients(3, [93, 88, 94], seed=1, noise=0.35))
        workloads = [Workload("W1 tutorial, 3 clients x 10 epochs, linear", tutorial, 3, 10, 500, linear_model, 30,
                              fixed=tutorial.client_ids)]
        if not wanted or any("W2".startswith(p) or p.startswith("W2") for p in wanted):
            ft.write_emnist_h5(os.path.join(folder, "train.h5"), emnist_sized_clients())
            emnist = ft.ClientData.from_h5(os.path.join(folder, "train.h5"))
            workloads.append(Workload("W2 10 of 3,383 clients, 1 epoch, linear", emnist, 10, 1, 500, linear_model, 30))
        header = (f"{'workload':<44} {'engine':<14} {'median ms':>9} {'first s':>8} {'peak +MiB':>9} "
                  f"{'/bound':>7} {'goal ms':>8}")
        print(header)
        print("-" * len(header))
        for w in workloads:
            if wanted and not any(w.name.startswith(prefix) for prefix in wanted):
                continue
            rows = measure(w, [BoundRun(w), FedteachRun(w, "fast"), GeneralRun(w, "mnist"), GeneralRun(w, "keras")])
            bound = next(m for name, (m, _, _) in rows.items() if name.startswith("bound"))
            goal = GOALS_MS[w.name[:2]]
            for engine, (median, first, peak) in rows.items():
                verdict = f"{goal:6.0f} {'ok' if 1000 * median <= goal else 'MISSED'}" if "general" in engine else ""
                print(f"{w.name:<44} {engine:<14} {1000 * median:9.1f} {first:8.2f} {peak:9.0f} "
                      f"{median / bound:7.2f} {verdict:>8}")
            for model in ("mnist", "keras"):
                same = GeneralRun(w, model).history(3) == GeneralRun(w, model).history(3)
                print(f"{w.name:<44} general/{model}: two runs from seed 0 give "
                      f"{'identical' if same else 'DIFFERENT'} metrics (rounds 1-3)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
