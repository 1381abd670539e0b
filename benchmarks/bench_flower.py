"""Flower: seconds per round on the Deployment Runtime and on the Simulation Runtime, three runs each.

Run: ``python benchmarks/bench_flower.py [--runs 3] [--rounds 4]`` (about 5 minutes; needs
``pip install -e ".[flower]"``).

The workload is notebook 8's experiment: 3 offline-digits writers, softmax
regression, 5 local epochs of batches of 20, SGD 0.02, no shuffling. Each run
starts a new federation (:func:`fedteach.flower.run_local_federation`, or
:func:`fedteach.flower.run_simulation_runtime`) and prints, per run:

* the seconds of every round, as the ServerApp measured them (from sending the
  model to having applied the average);
* the steady round (the median of rounds 2 onwards) and its ratio to the
  reference: a steady round of fedteach's own simulation of the same
  experiment, in this process (``simulate_experiment``);
* the whole run's seconds (starting every process, the rounds, stopping them);
* the processes that ran (every one the watchdog saw); and, in one more run
  per runtime (reading the processes' memory slows the rounds), the peak of the
  federation's memory: its processes' summed PSS, sampled every 0.5 s.

The acceptance of issue 15: a deployment round <= 7 s on 2 cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import statistics
import sys
import tempfile
import textwrap
import threading
import time

import fedteach as ft  # noqa: F401  (first: TensorFlow then starts quiet)
import psutil
from fedteach import flower, flower_watchdog

EXPERIMENT = textwrap.dedent('''
    import keras
    import fedteach as ft
    from fedteach.flower import FlowerExperiment

    train, _ = ft.load_offline_digits(num_clients=3, seed=0)
    preprocess = ft.preprocess_for_tutorial(num_epochs=5, batch_size=20, shuffle_buffer=0)
    SPEC = preprocess(train.create_tf_dataset_for_client(train.client_ids[0])).element_spec

    def model_fn():
        net = keras.Sequential([keras.Input((784,)),
                                keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
        return ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(), input_spec=SPEC,
                                   metrics=[keras.metrics.SparseCategoricalAccuracy()])

    experiment = FlowerExperiment(
        model_fn=model_fn, client_optimizer_fn=lambda: keras.optimizers.SGD(learning_rate=0.02),
        client_data=train, client_ids=train.client_ids[:3], preprocess_fn=preprocess, num_rounds=4)
''')


class MemorySampler:
    """The peak of the federation's memory, sampled in a thread: the sum of its processes' proportional set
    sizes (PSS: a page shared by k processes, such as TensorFlow's libraries, counts 1/k in each)."""

    def __init__(self, folder: pathlib.Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.5):
            total = 0
            for workdir in self.folder.glob("fedteach-flower-*"):
                for proc in flower_watchdog.members(str(workdir)):
                    try:
                        total += proc.memory_full_info().pss
                    except psutil.Error:
                        pass
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runtimes", nargs="+", default=["deployment", "simulation"],
                        choices=["deployment", "simulation"])
    args = parser.parse_args(argv)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-flower-"))
    (folder / "bench_experiment.py").write_text(EXPERIMENT)
    sys.path.insert(0, str(folder))
    import bench_experiment
    reference = flower.simulate_experiment(dataclasses.replace(bench_experiment.experiment, num_rounds=args.rounds))
    ref_steady = statistics.median(r["seconds"] for r in reference[1:])
    print(f"reference: fedteach's simulation, steady round {ref_steady * 1000:.1f} ms")
    runtimes = {"deployment": flower.run_local_federation, "simulation": flower.run_simulation_runtime}
    for name in args.runtimes:
        run, steadies = runtimes[name], []
        for i in range(args.runs + 1):  # the last run measures the memory (sampling it slows the rounds)
            sampler = MemorySampler(pathlib.Path(tempfile.gettempdir())) if i == args.runs else None
            result = run("bench_experiment:experiment", num_rounds=args.rounds)
            peak = sampler.stop() if sampler else None
            seconds = [r["seconds"] for r in result.rounds]
            steady = statistics.median(seconds[1:])
            if sampler is None:
                steadies.append(steady)
            loss_gap = max(abs(r["metrics"]["loss"] - s["metrics"]["loss"]) for r, s in zip(result.rounds, reference))
            memory = f"peak {peak:,.0f} MiB (this run sampled it)" if sampler else "memory not sampled"
            print(f"{name:>10} run {i + 1}: rounds {' '.join(f'{s:.2f}' for s in seconds)} s; steady {steady:.2f} s "
                  f"= {steady / ref_steady:,.0f}x the reference; whole run {result.seconds:.1f} s; "
                  f"{len(result.pids)} processes; {memory}; max |loss - reference| {loss_gap:.1e}")
        print(f"{name:>10}: steady round over {args.runs} timed runs: {min(steadies):.2f}-{max(steadies):.2f} s "
              f"(median {statistics.median(steadies):.2f} s)")


if __name__ == "__main__":
    main()
