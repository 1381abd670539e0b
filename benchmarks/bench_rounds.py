"""Round-time benchmark of fedteach's engines against a hand-written bound.

Run: ``python benchmarks/bench_rounds.py`` (a few minutes, one process);
``python benchmarks/bench_rounds.py W2 W4`` runs only the workloads whose names start so.

Workloads (data generated in federated EMNIST's layout; W2-W4 read an
EMNIST-sized HDF5 file, 3,383 clients / 341,873 examples, written to a temp dir):

* W1, the tutorial: 3 clients, 10 epochs, shuffle 500, batch 20, linear 784->10, SGD 0.02;
  the clients' datasets are built anew every round (reading counts as part of the round), and in a
  second row once and reused, as the tutorial's code does.
* W2: 10 random clients a round, 1 epoch, batch 20, same model; the round
  includes building the clients' datasets from the h5 file (reading them).
* W3: as W2 with 50 clients a round.
* W4: as W2 with a small CNN (conv 32x3x3, max-pool, dense 128, dense 10).

For each: median round time after warm-up, first-round time (process build to
first round done; for the bound: its first call, trace and compile) and peak
memory of the engine's run, for the fast path, the general path and the
*bound*: all clients' batches already in memory as tensors (prepared before the
run, not counted) and one XLA-compiled function running the same SGD steps
side by side. The bound and the fast path take turns over the rounds three
times (see ``measure``); the medians are over all their timed rounds.

Peak memory ("peak +MiB"): the kernel's peak resident set size of the process
(``VmHWM``), reset just before a run (``/proc/self/clear_refs``), minus the
resident size then: the memory the run added, measured exactly and without a
sampling thread that would disturb the timings. (TensorFlow's allocator keeps
freed memory, so a later run can reuse what an earlier one grew.) Where the
reset is not allowed, a thread samples the resident size every 5 ms instead.
The process's total peak (``getrusage`` ``ru_maxrss``) is printed at the end.
"""
from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time

import fedteach as ft  # noqa: E402  (first: TensorFlow then starts quiet)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fedteach.rounds import fast as ft_fast  # noqa: E402

EMNIST_CLIENTS, EMNIST_EXAMPLES = 3383, 341873
LR = 0.02
BLOCKS = 3  # passes over a workload's rounds for the bound and the fast engine (the general engine: one)


def rss_mib(field: str = "VmRSS") -> float:
    """The process's resident memory now (or its peak, ``VmHWM``), in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


class PeakRss:
    """Memory added during the ``with`` block, in MiB (``.added``): from the kernel's peak counter,
    reset on entry, or else from a thread sampling every 5 ms."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self._thread = None
        except OSError:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start = self.peak = rss_mib()
        if self._thread:
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc):
        if self._thread:
            self._stop.set()
            self._thread.join()
            peak = max(self.peak, rss_mib())
        else:
            peak = rss_mib("VmHWM")
        self.added = peak - self.start


def peak_mib() -> float:
    """The process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def linear_model():
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation="softmax",
                                                                     kernel_initializer="zeros")])


def cnn_model():
    return keras.Sequential([
        keras.Input((784,)), keras.layers.Reshape((28, 28, 1)),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax")])


def model_fn_for(build):
    def model_fn():
        keras.utils.set_random_seed(0)
        return ft.from_keras_model(
            build(), keras.losses.SparseCategoricalCrossentropy(),
            {"x": tf.TensorSpec([None, 784], tf.float32), "y": tf.TensorSpec([None, 1], tf.int32)},
            metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return model_fn


class Workload:
    def __init__(self, name, client_data, clients_per_round, epochs, shuffle, build, rounds, fixed=None,
                 reuse=False):
        self.name, self.client_data, self.k, self.build, self.rounds = name, client_data, clients_per_round, build, rounds
        self.preprocess = ft.preprocess_for_tutorial(epochs, 20, shuffle, seed=None)
        self.epochs, self.shuffle, self.fixed = epochs, shuffle, fixed
        self.reuse, self._data = reuse, None  # reuse: build the datasets once, as the tutorial does
        # Each round's clients, drawn here: sampling the ids is not part of the measured round (nor of the bound's)
        everyone = np.array(client_data.client_ids)
        self._ids = [fixed if fixed is not None else
                     np.random.default_rng(r).choice(everyone, clients_per_round, replace=False).tolist()
                     for r in range(rounds + 1)]

    def ids(self, round_num):
        return self._ids[round_num]

    def data(self, round_num):
        if self.reuse and self._data is not None:
            return self._data
        self._data = ft.make_federated_data(self.client_data, self.ids(round_num), self.preprocess)
        return self._data


class FedteachRun:
    """A fedteach process on a workload: ``start`` builds it and runs round 0, ``round(r)`` runs round r."""

    def __init__(self, w: Workload, engine: str):
        self.w, self.engine, self.name = w, engine, engine

    def start(self) -> float:
        start = time.perf_counter()
        self.process = ft.build_federated_averaging_process(
            model_fn_for(self.w.build), client_optimizer_fn=lambda: keras.optimizers.SGD(LR), engine=self.engine)
        self.state, _ = self.process.next(self.process.initialize(), self.w.data(0))
        return time.perf_counter() - start

    def round(self, r) -> float:
        t = time.perf_counter()
        self.state, _ = self.process.next(self.state, self.w.data(r))
        elapsed = time.perf_counter() - t
        assert self.process.path == self.engine, (self.process.path, self.process.path_reason)
        return elapsed


class Bound:
    """Same SGD steps, all clients side by side, data already in memory, one XLA function."""

    def __init__(self, build):
        self.net = build()
        self.cnn = len(self.net.trainable_variables) > 2
        self.fn = tf.function(self._round, jit_compile=True, autograph=False)
        self.name = "bound"

    def batches(self, w: Workload, round_num):
        """The round's batches as tensors [clients, steps, batch, ...] with a mask (not timed)."""
        arrays = [w.client_data.client_arrays(c) for c in w.ids(round_num)]
        rng = np.random.default_rng(round_num)
        streams = []
        for a in arrays:
            n = len(a["label"])
            order = np.concatenate([rng.permutation(n) if w.shuffle else np.arange(n) for _ in range(w.epochs)])
            streams.append(order)
        steps = ft_fast.bucket(max(-(-len(s) // 20) for s in streams))  # padded like the fast path
        x = np.zeros((len(arrays), steps * 20, 784), np.float32)
        y = np.zeros((len(arrays), steps * 20), np.int32)
        mask = np.zeros((len(arrays), steps * 20), np.float32)
        for c, (a, s) in enumerate(zip(arrays, streams)):
            x[c, :len(s)] = a["pixels"].reshape(-1, 784)[s]
            y[c, :len(s)] = a["label"][s]
            mask[c, :len(s)] = 1
        shape = lambda v: tf.constant(v.reshape((len(arrays), steps, 20) + v.shape[2:]))
        return shape(x), shape(y), shape(mask), tf.constant([len(s) for s in streams], tf.float32)

    def _round(self, weights, x, y, mask, sizes):
        clients = tf.shape(x)[0]
        ws = [tf.tile(w[None], tf.concat([[clients], tf.ones_like(tf.shape(w))], 0)) for w in weights]

        def loss_fn(ws, xb, yb, mb):
            if self.cnn:  # the Keras model's stateless call, vectorized over clients
                p = tf.vectorized_map(lambda a: self.net.stateless_call(a[0], [], a[1])[0], (ws, xb))
            else:  # hand-written batched matmul
                p = tf.nn.softmax(tf.einsum("cbi,cio->cbo", xb, ws[0]) + ws[1][:, None])
            nll = -tf.math.log(tf.gather(p, yb, batch_dims=2) + 1e-12)
            return tf.reduce_sum(tf.reduce_sum(nll * mb, 1) / tf.maximum(tf.reduce_sum(mb, 1), 1.0))

        def step(t, ws):
            with tf.GradientTape() as tape:
                tape.watch(ws)
                loss = loss_fn(ws, x[:, t], y[:, t], mask[:, t])
            return t + 1, [w - LR * g for w, g in zip(ws, tape.gradient(loss, ws))]

        real_steps = tf.reduce_sum(tf.cast(tf.reduce_any(mask > 0, axis=[0, 2]), tf.int32))  # padding: no work
        _, ws = tf.while_loop(lambda t, _: t < real_steps, step, (0, ws))
        share = sizes / tf.reduce_sum(sizes)
        return [tf.tensordot(share, w, 1) for w in ws]


class BoundRun:
    """The bound on a workload; its batches are prepared in memory beforehand (not timed, not counted)."""

    def __init__(self, w: Workload):
        self.bound = Bound(w.build)
        self.prepared = [self.bound.batches(w, r) for r in range(w.rounds + 1)]
        self.name = "bound"

    def start(self) -> float:
        self.weights = [tf.constant(v.numpy()) for v in self.bound.net.trainable_variables]
        t = time.perf_counter()
        try:
            self.weights = self.bound.fn(self.weights, *self.prepared[0])
        except tf.errors.InvalidArgumentError:  # XLA cannot compile the vectorized conv gradient: plain graph
            self.bound.fn = tf.function(self.bound._round, autograph=False)
            self.name = "bound*"
            self.weights = self.bound.fn(self.weights, *self.prepared[0])
        return time.perf_counter() - t

    def round(self, r) -> float:
        t = time.perf_counter()
        self.weights = self.bound.fn(self.weights, *self.prepared[r])
        _ = [v.numpy() for v in self.weights]
        return time.perf_counter() - t


def measure(w: Workload, runs: list, blocks: int = BLOCKS) -> dict:
    """name -> (median round time, first-round time, peak +MiB) of each run.

    Each run starts (build, round 0) and runs rounds 1..N under the memory
    measure; then the runs that are quick take turns for ``blocks - 1`` more
    passes over the same rounds, so that a slow spell of the machine hits
    every engine alike. The first timed round of a run is left out (warm-up).
    """
    times, firsts, peaks = {}, {}, {}
    rounds = range(1, w.rounds + 1)
    for run in runs:
        with PeakRss() as memory:
            firsts[run] = run.start()
            times[run] = [run.round(r) for r in rounds][1:]
        peaks[run] = memory.added
    for _ in range(blocks - 1):
        for run in runs:
            if run.name != "general":
                times[run] += [run.round(r) for r in rounds]
    return {run.name: (statistics.median(times[run]), firsts[run], peaks[run]) for run in runs}


def data_access(folder):
    t = time.perf_counter()
    ft.write_emnist_h5(os.path.join(folder, "train.h5"), emnist_sized_clients())
    written = time.perf_counter() - t
    t = time.perf_counter()
    cd = ft.ClientData.from_h5(os.path.join(folder, "train.h5"))
    opened = time.perf_counter() - t
    rng = np.random.default_rng(0)
    reads = []
    for r in range(10):
        ids = rng.choice(cd.client_ids, 10, replace=False)
        t = time.perf_counter()
        for c in ids:
            cd.client_arrays(c)
        reads.append(time.perf_counter() - t)
    return cd, written, opened, statistics.median(reads)


def emnist_sized_clients():
    """3,383 clients, 341,873 examples, client sizes spread like EMNIST's (mean ~101)."""
    rng = np.random.default_rng(0)
    sizes = np.maximum(rng.lognormal(np.log(90), 0.5, EMNIST_CLIENTS).astype(int), 10)
    diff = EMNIST_EXAMPLES - sizes.sum()
    sizes += diff // EMNIST_CLIENTS
    sizes[: diff % EMNIST_CLIENTS] += 1
    assert sizes.sum() == EMNIST_EXAMPLES
    return ft.make_emnist_like_clients(EMNIST_CLIENTS, sizes, seed=0, noise=0.3)


def machine_line() -> str:
    """The date, the CPU and the versions, for the first line of a benchmark's output."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')}  machine {cpu}, {os.cpu_count()} cores  "
            f"TF {tf.__version__}  Keras {keras.__version__}  Python {platform.python_version()}")


def main():
    print(machine_line())
    with tempfile.TemporaryDirectory() as folder:
        cd, written, opened, read10 = data_access(folder)
        t = time.perf_counter()
        ft.load_offline_digits()
        offline = time.perf_counter() - t
        print(f"data: wrote EMNIST-sized h5 ({len(cd)} clients) in {written:.1f} s; "
              f"ClientData.from_h5 {1000 * opened:.0f} ms; reading 10 random clients {1000 * read10:.1f} ms (median); "
              f"load_offline_digits {1000 * offline:.0f} ms")
        tutorial = ft.ClientData.from_arrays(ft.make_emnist_like_clients(3, [93, 88, 94], seed=1, noise=0.35))
        workloads = [
            Workload("W1 tutorial, 3 clients x 10 epochs, linear", tutorial, 3, 10, 500, linear_model, 30,
                     fixed=tutorial.client_ids),
            Workload("W1, datasets built once (as the tutorial)", tutorial, 3, 10, 500, linear_model, 30,
                     fixed=tutorial.client_ids, reuse=True),
            Workload("W2 10 of 3,383 clients, 1 epoch, linear", cd, 10, 1, 500, linear_model, 30),
            Workload("W3 50 of 3,383 clients, 1 epoch, linear", cd, 50, 1, 500, linear_model, 9),
            Workload("W4 10 of 3,383 clients, 1 epoch, CNN", cd, 10, 1, 500, cnn_model, 9),
        ]
        header = f"{'workload':<44} {'engine':<8} {'median ms':>9} {'first s':>8} {'peak +MiB':>9} {'fast/bound':>10}"
        print(header)
        print("-" * len(header))
        wanted = sys.argv[1:]
        for w in workloads:
            if wanted and not any(w.name.startswith(prefix) for prefix in wanted):
                continue
            runs = [BoundRun(w), FedteachRun(w, "fast")] + ([] if w.reuse else [FedteachRun(w, "general")])
            rows = measure(w, runs)
            bound_median = next(m for name, (m, _, _) in rows.items() if name.startswith("bound"))
            for engine, (median, first, peak) in rows.items():
                extra = f"{rows['fast'][0] / bound_median:10.2f}" if engine == "fast" else ""
                print(f"{w.name:<44} {engine:<8} {1000 * median:9.1f} {first:8.2f} {peak:9.0f} {extra}")
            sys.stdout.flush()
    print(f"process peak RSS {peak_mib():.0f} MiB; bound*: XLA could not compile it, ran as a plain graph")


if __name__ == "__main__":
    main()
