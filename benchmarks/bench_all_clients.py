"""W5: every client in every round (C = 1.0), time and peak memory.

Run: ``python benchmarks/bench_all_clients.py`` (a few minutes, one process
after a child process writes the data).

FedSGD's classic baseline (McMahan et al. 2017) trains with all clients in
every round. The workload: an EMNIST-sized HDF5 file in TFF's layout (3,383
writers, 341,873 examples, float32 pixels: 1.02 GiB), written by a child
process so that generating it does not count in this process's memory; the
linear model 784 -> 10; rows:

* ``FedAvg``: all 3,383 clients, 1 epoch, batch 20, shuffle 100, SGD 0.02;
* ``FedSGD``: all 3,383 clients, one gradient over each client's data, server SGD.

Each round's time is split into building the 3,383 client datasets
(``ft.make_federated_data``) and ``process.next``. Printed: the first round
(it compiles), the median steady round, and the process's peak resident
memory (``VmHWM``, the file's memory map included) after each row. The
reference, run in the same process, is the same engine on 50 clients a round
(W3 of ``bench_rounds.py``): the ratio ``per example`` compares the steady
all-clients round's time per example with it (1.0: a round of all clients
costs no more per example than a small round).

The acceptance of issue 19: a steady FedAvg round <= 2 s, the first <= 4 s,
the process's peak < 2 GiB.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

import fedteach as ft  # noqa: E402  (first: TensorFlow then starts quiet)
import keras  # noqa: E402
import numpy as np  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_rounds import LR, linear_model, machine_line, model_fn_for, rss_mib  # noqa: E402

ROUNDS = 5
REFERENCE_CLIENTS = 50


def write_file(path: str) -> None:
    """Writes the EMNIST-sized file in a child process (its 1 GiB of arrays stay out of this process)."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import fedteach as ft; from bench_rounds import "
            f"emnist_sized_clients; ft.write_emnist_h5({path!r}, emnist_sized_clients())")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def rounds(process, client_data, ids, preprocess, num_rounds):
    """(data seconds, next seconds) of each round, the first included."""
    state, times = process.initialize(), []
    for _ in range(num_rounds):
        t = time.perf_counter()
        data = ft.make_federated_data(client_data, ids, preprocess)
        built = time.perf_counter()
        state, metrics = process.next(state, data)
        times.append((built - t, time.perf_counter() - built))
        del data
    return times, metrics


def report(name, times, examples, reference_per_example=None):
    first = sum(times[0])
    steady_data = statistics.median(t[0] for t in times[1:])
    steady_next = statistics.median(t[1] for t in times[1:])
    steady = steady_data + steady_next
    ratio = f"{steady / examples / reference_per_example:10.2f}" if reference_per_example else f"{'(ref)':>10}"
    print(f"{name:<38} {times[0][0]:7.2f} + {times[0][1]:5.2f} {steady_data:7.2f} + {steady_next:5.2f} "
          f"{rss_mib('VmHWM'):9.0f} {ratio}")
    sys.stdout.flush()
    return steady / examples, first


def main():
    print(machine_line())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "train.h5")
        t = time.perf_counter()
        write_file(path)
        print(f"wrote the EMNIST-sized file ({os.path.getsize(path) / 2**30:.2f} GiB) in a child process in "
              f"{time.perf_counter() - t:.0f} s; peak memory of this process before the runs: "
              f"{rss_mib('VmHWM'):.0f} MiB")
        cd = ft.ClientData.from_h5(path)
        ids = cd.client_ids
        examples = sum(cd.num_examples(c) for c in ids)
        preprocess = ft.preprocess_for_tutorial(num_epochs=1, batch_size=20, shuffle_buffer=100, seed=None)
        print(f"{'row (seconds: datasets + next)':<38} {'first round':>15} {'steady round':>15} "
              f"{'peak MiB':>9} {'per example':>10}")
        small = list(np.random.default_rng(0).choice(ids, REFERENCE_CLIENTS, replace=False))
        fedavg = lambda: ft.build_federated_averaging_process(
            model_fn_for(linear_model), client_optimizer_fn=lambda: keras.optimizers.SGD(LR))
        times, _ = rounds(fedavg(), cd, small, preprocess, ROUNDS)
        reference, _ = report(f"reference: FedAvg, {REFERENCE_CLIENTS} clients", times,
                              sum(cd.num_examples(c) for c in small))
        times, metrics = rounds(fedavg(), cd, ids, preprocess, ROUNDS)
        report(f"W5 FedAvg, all {len(ids):,} clients", times, examples, reference)
        fedsgd = ft.build_federated_sgd_process(model_fn_for(linear_model),
                                                server_optimizer_fn=lambda: keras.optimizers.SGD(1.0))
        times, _ = rounds(fedsgd, cd, ids, ft.preprocess_for_tutorial(num_epochs=1, batch_size=20, shuffle_buffer=1),
                          ROUNDS)
        report(f"W5 FedSGD, all {len(ids):,} clients", times, examples, reference)
    print(f"process peak resident memory {rss_mib('VmHWM'):.0f} MiB (limit 2048); FedAvg's last round: {metrics}")


if __name__ == "__main__":
    main()
