"""The ``fedteach`` command: the tutorial's training headless, and ``fedteach lab``.

Example:
    >>> parse_args(['--rounds', '2', '--clients-per-round', '5']).clients_per_round
    5
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _progress(done: int, total: int, width: int = 30) -> str:
    """A text progress bar.

    Example:
        >>> _progress(3, 10, width=10)
        '[###-------] 3/10'
    """
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the command line (see ``fedteach --help``)."""
    parser = argparse.ArgumentParser(
        prog="fedteach",
        description="Federated Averaging on federated EMNIST (or the offline digits), "
                    "as in the TFF tutorial. `fedteach lab` opens the course in JupyterLab.")
    parser.add_argument("command", nargs="?", default="train", choices=["train", "lab"])
    parser.add_argument("--data", choices=["auto", "emnist", "offline"], default="auto",
                        help="auto: EMNIST when cached or downloadable, else the bundled offline digits")
    parser.add_argument("--model", choices=["linear", "cnn"], default="linear")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients-per-round", type=int, default=3)
    parser.add_argument("--random-clients", action="store_true",
                        help="sample new clients every round (default: the tutorial's fixed first clients)")
    parser.add_argument("--client-lr", type=float, default=0.02)
    parser.add_argument("--server-lr", type=float, default=None,
                        help="server learning rate (default: 1.0 for sgd/momentum with fedavg/fedprox, 0.1 for "
                             "sgd with fedsgd and for adagrad, 0.01 for adam/yogi)")
    parser.add_argument("--algorithm", choices=["fedavg", "fedsgd", "fedprox"], default="fedavg",
                        help="fedavg (McMahan et al. 2017), fedsgd (one gradient per client per round) or "
                             "fedprox (fedavg with a proximal term, see --mu)")
    parser.add_argument("--mu", type=float, default=0.01, help="FedProx's proximal strength (with --algorithm fedprox)")
    parser.add_argument("--server-optimizer", choices=["sgd", "adam", "adagrad", "yogi", "momentum"], default="sgd",
                        help="server optimizer (Reddi et al. 2020): sgd = FedAvg, momentum = FedAvgM, "
                             "adam/adagrad/yogi = FedAdam/FedAdagrad/FedYogi")
    parser.add_argument("--dp-noise", type=float, default=None,
                        help="differential privacy: noise multiplier z of DP-FedAvg (clip + Gaussian noise of "
                             "std z * clip / clients); reports epsilon")
    parser.add_argument("--dp-clip", type=float, default=None,
                        help="L2 clip norm of each client update (with --dp-noise: the DP clip, default 1.0; "
                             "alone: clipping without noise)")
    parser.add_argument("--dp-delta", type=float, default=1e-5, help="delta that epsilon is reported for")
    parser.add_argument("--bits", type=int, default=None,
                        help="compress each client update to this many bits per number (1-16), reports bytes sent")
    parser.add_argument("--epochs", type=int, default=10, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, help="write the history as CSV")
    parser.add_argument("--json", type=Path, help="write the history as JSON")
    parser.add_argument("--plot", type=Path, help="write the convergence plot as PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def lab() -> int:
    """Opens the course notebooks in JupyterLab."""
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    if not notebooks.is_dir():
        print(f"fedteach lab: no notebooks folder at {notebooks}; run it from a clone of fedteach.", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "jupyter", "lab", str(notebooks)])


def config_from_args(args):
    """The :class:`~fedteach.experiment.ExperimentConfig` that the command line describes.

    Example:
        >>> config_from_args(parse_args(['--server-optimizer', 'adam', '--dp-noise', '0.5']))
        ... # doctest: +ELLIPSIS
        ExperimentConfig(clients_per_round=3, ..., server_learning_rate=0.01, ..., dp_noise_multiplier=0.5, ...)
    """
    from fedteach.experiment import ExperimentConfig
    from fedteach.optimizers import default_server_learning_rate

    server_lr = args.server_lr
    if server_lr is None:
        plain_sgd = args.algorithm == "fedsgd" and args.server_optimizer == "sgd"
        server_lr = 0.1 if plain_sgd else default_server_learning_rate(args.server_optimizer)
    return ExperimentConfig(
        clients_per_round=args.clients_per_round, client_learning_rate=args.client_lr,
        server_learning_rate=server_lr, local_epochs=args.epochs, batch_size=args.batch_size,
        rounds=args.rounds, seed=args.seed, random_clients=args.random_clients, model=args.model,
        algorithm=args.algorithm, proximal_mu=args.mu if args.algorithm == "fedprox" else 0.0,
        server_optimizer=args.server_optimizer, dp_noise_multiplier=args.dp_noise, dp_clip_norm=args.dp_clip,
        dp_delta=args.dp_delta, quantize_bits=args.bits)


def train(args) -> int:
    """Runs the experiment described by ``args`` and prints every round."""
    if args.data != "auto":
        os.environ["FEDTEACH_DATA"] = args.data
    import fedteach as ft
    from fedteach.experiment import Experiment

    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"fedteach: {error}", file=sys.stderr)
        return 2
    train_data, test_data = ft.load_course_data()
    experiment = Experiment(train_data, test_data, config, name="fedteach")
    measurements = experiment.aggregator.measurement_names if experiment.aggregator else ()
    start = time.perf_counter()

    def report(entry):
        line = (f"round {entry['round']:2d}, metrics=<accuracy={entry['train_accuracy']:.6g},"
                f"loss={entry['train_loss']:.6g},num_examples={entry['num_examples']}>")
        line += "".join(f" {name}={entry[name]:.6g}" for name in measurements)
        if entry.get("eval_loss") is not None:
            line += f"  eval: accuracy={entry['eval_accuracy']:.4f} loss={entry['eval_loss']:.4f}"
        print(line, flush=True)
        if not args.quiet:
            print(_progress(entry["round"], args.rounds) + f" {time.perf_counter() - start:.1f}s",
                  file=sys.stderr, flush=True)

    try:
        experiment.run(callback=report)
    except ft.DivergenceError as error:
        print(f"fedteach: {error}", file=sys.stderr)
        return 1
    finally:
        _write_outputs(args, experiment.history)
    print(f"{len(experiment.history)} rounds in {time.perf_counter() - start:.1f} s "
          f"({experiment.process.path} engine)")
    return 0


def _write_outputs(args, history) -> None:
    if args.json:
        args.json.write_text(json.dumps(history, indent=1, default=float))
    if args.csv and history:
        with open(args.csv, "w", newline="") as f:
            fields = [k for k in history[0] if k != "clients"]
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
    if args.plot and history:
        import matplotlib
        matplotlib.use("Agg")
        from fedteach.plots import plot_convergence
        plot_convergence(history).savefig(args.plot, dpi=120, bbox_inches="tight")


def main(argv=None) -> int:
    """Entry point of the ``fedteach`` command."""
    args = parse_args(argv)
    return lab() if args.command == "lab" else train(args)


if __name__ == "__main__":
    sys.exit(main())
