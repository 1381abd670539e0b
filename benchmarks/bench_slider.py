"""Slider-to-curve benchmark: the first round after a settings change against a steady round.

Run: ``python benchmarks/bench_slider.py`` (about a minute, one process, offline data).

The workload is what the training dashboard does when a student moves a
slider and presses Run: a new :class:`fedteach.Experiment` with the new
:class:`fedteach.ExperimentConfig`, continuing from the current model
(``initial_state``), then one round of training and its evaluation. Each
change below is applied to the previous settings, in order (issue 18's table
and the other knobs of the panel); local training uses 2 epochs (the
tutorial's 10 for the "10 -> 2 local epochs" change).

For every change the script times the *first round*: building the new
Experiment plus its first ``run_round`` (training and evaluation). After it,
``STEADY`` more rounds of the same run are timed; their median is that
setting's *steady round*. The summary prints the median first round, the
median steady round and their ratio (goal: <= 10 on 2 cores; "new traces" counts
the compiled functions a change had to trace: shapes the session had not seen yet), then the first
round after a change of model architecture (linear -> cnn, fresh weights;
goal: <= 1.5 s on a quiet machine), which pays one compilation per
architecture. That change comes after all the others, so the CNN's first round
also pays for what they turned on (Adam, FedProx, DP, 8-bit quantization); a
second process measures the same change from the dashboard's starting
settings (``ExperimentConfig()``: 3 clients, 10 local epochs, FedAvg), its
first compilation of each model.

Last, what the dashboard does since a setting change compiles ahead: the
controller's ``warm_up`` (called when a slider moves) compiles the new
settings in a background thread, and Run (``prepare`` and one round with its
evaluation) finds them compiled. Two changes that need a new compilation,
with shapes this session has not seen: clients per round 5 -> 7 and
linear -> cnn (3 clients, a fresh model); the script prints how long the
warm-up took (the time a student has to press Run) and the first round after it.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("FEDTEACH_DATA", "offline")

import fedteach as ft  # noqa: E402
from fedteach.rounds import fast  # noqa: E402
from fedteach.widgets import TrainingController  # noqa: E402

STEADY = 5  # timed rounds after each change

CHANGES = [  # (what the student changes, the new settings relative to the previous ones)
    ("local epochs 10 -> 2", dict(local_epochs=2)),
    ("client lr 0.02 -> 0.05", dict(client_learning_rate=0.05)),
    ("clients per round 3 -> 5", dict(clients_per_round=5)),
    ("server lr 1.0 -> 0.5", dict(server_learning_rate=0.5)),
    ("server optimizer sgd -> adam", dict(server_optimizer="adam", server_learning_rate=0.01)),
    ("algorithm fedprox, mu 0.1", dict(algorithm="fedprox", proximal_mu=0.1)),
    ("FedProx mu 0.1 -> 0.5", dict(proximal_mu=0.5)),
    ("seed 0 -> 1", dict(seed=1)),
    ("random clients", dict(random_clients=True)),
    ("DP noise 0.5, clip 1", dict(dp_noise_multiplier=0.5, dp_clip_norm=1.0)),
    ("DP noise 0.5 -> 1.0", dict(dp_noise_multiplier=1.0)),
    ("quantize 8 bits", dict(quantize_bits=8)),
    ("client lr 0.05 -> 0.03", dict(client_learning_rate=0.03)),
]


def traces() -> int:
    """How many round and evaluation functions have been traced so far (each is one XLA compilation or more)."""
    return sum(len(compiled.traces) for compiled in fast._COMPILED.values())


def first_and_steady(train, test, config, state=None):
    """(seconds to build the Experiment and run its first round, median steady round, the Experiment)."""
    start = time.perf_counter()
    experiment = ft.Experiment(train, test, config, initial_state=state)
    experiment.run_round(evaluate=True)
    first = time.perf_counter() - start
    steady = []
    for _ in range(STEADY):
        start = time.perf_counter()
        experiment.run_round(evaluate=True)
        steady.append(time.perf_counter() - start)
    return first, statistics.median(steady), experiment


def main() -> None:
    train, test = ft.load_offline_digits()
    config = ft.ExperimentConfig(local_epochs=10)
    print(f"fedteach slider benchmark, {os.cpu_count()} CPUs, offline digits ({len(train.client_ids)} writers)")
    start = time.perf_counter()
    _, _, experiment = first_and_steady(train, test, config)
    print(f"{'cold start (first compile of the linear model)':44s} first {time.perf_counter() - start:7.3f} s")
    firsts, steadies = [], []
    for label, change in CHANGES:
        config = config.replace(**change)
        before = traces()
        first, steady, experiment = first_and_steady(train, test, config, experiment.state)
        firsts.append(first)
        steadies.append(steady)
        print(f"{label:44s} first {first:7.3f} s   steady {steady * 1e3:7.1f} ms   ratio {first / steady:6.1f}"
              f"   new traces {traces() - before}")
    first, steady = statistics.median(firsts), statistics.median(steadies)
    print(f"median over {len(CHANGES)} changes: first round {first * 1e3:.1f} ms, steady round {steady * 1e3:.1f} ms, "
          f"ratio {first / steady:.1f} (goal <= 10)")
    arch_first, arch_steady, _ = first_and_steady(train, test, config.replace(model="cnn"))
    print(f"model linear -> cnn (fresh weights): first round {arch_first:.3f} s (goal <= 1.5 s), "
          f"steady {arch_steady * 1e3:.1f} ms")
    sys.stdout.flush()
    subprocess.run([sys.executable, __file__, "--from-defaults"], check=True)
    warmed_up(train, test, config.replace(model="linear"))
    sys.stdout.flush()


def architecture_change_from_defaults() -> None:
    """Prints the first round of linear -> cnn from the dashboard's starting settings, in a fresh process."""
    train, test = ft.load_offline_digits()
    config = ft.ExperimentConfig()
    first_and_steady(train, test, config)
    first, steady, _ = first_and_steady(train, test, config.replace(model="cnn"))
    print(f"model linear -> cnn from the default settings: first round {first:.3f} s (goal <= 1.5 s), "
          f"steady {steady * 1e3:.1f} ms")


def warmed_up(train, test, config) -> None:
    """Prints the first round after a change that needs a compilation, with the dashboard's warm-up."""
    controller = TrainingController(train, test)
    config = config.replace(clients_per_round=5, rounds=1)
    controller.prepare(config)
    controller.run()
    for label, change in (("clients per round 5 -> 7", dict(clients_per_round=7)),
                          ("model linear -> cnn", dict(model="cnn", clients_per_round=3))):
        config = config.replace(**change)
        start = time.perf_counter()
        controller.warm_up(config).join()
        warm = time.perf_counter() - start
        before = traces()
        start = time.perf_counter()
        controller.prepare(config)
        controller.run()
        first = time.perf_counter() - start
        print(f"with warm-up: {label:30s} warm-up {warm:6.3f} s, then Run's first round {first:6.3f} s"
              f"   new traces {traces() - before}   {controller.warm_up_error or ''}")


if __name__ == "__main__":
    architecture_change_from_defaults() if sys.argv[1:] == ["--from-defaults"] else main()
