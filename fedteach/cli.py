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


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in ``--help`` when it has a value."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (and exit status 2), pointing to ``--help``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    """Parses the command line (see ``fedteach --help``)."""
    parser = _Parser(
        prog="fedteach",
        description="Federated Averaging on federated EMNIST (or the offline digits), "
                    "as in the TFF tutorial. `fedteach lab` opens the course in JupyterLab.",
        formatter_class=_DefaultsShown)
    parser.add_argument("command", nargs="?", default="train", choices=["train", "lab"],
                        help="train: run the rounds here and print them; lab: open the course in JupyterLab "
                             "(options after it, e.g. --no-browser --port 8890 --allow-root, go to JupyterLab)")
    parser.add_argument("--data", choices=["auto", "emnist", "offline"], default="auto",
                        help="auto: EMNIST when cached or downloadable, else the bundled offline digits")
    parser.add_argument("--model", choices=["linear", "cnn"], default="linear",
                        help="linear: the tutorial's softmax regression; cnn: conv 32 3x3, max-pool, dense 128, dense 10")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of training")
    parser.add_argument("--clients-per-round", type=int, default=3, help="clients that train in each round")
    parser.add_argument("--random-clients", action="store_true",
                        help="sample new clients every round (default: the tutorial's fixed first clients)")
    parser.add_argument("--client-lr", type=float, default=0.02, help="learning rate of the clients' local SGD")
    parser.add_argument("--server-lr", type=float, default=None,
                        help="server learning rate (default: 1.0 for sgd/momentum with fedavg/fedprox, 0.1 for "
                             "sgd with fedsgd and for adagrad, 0.01 for adam/yogi)")
    parser.add_argument("--algorithm", choices=["fedavg", "fedsgd", "fedprox"], default="fedavg",
                        help="fedavg (McMahan et al. 2017), fedsgd (one gradient per client per round) or "
                             "fedprox (fedavg with a proximal term, see --mu)")
    parser.add_argument("--mu", type=float, default=None,
                        help="FedProx's proximal strength (only with --algorithm fedprox, where it defaults to 0.01)")
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
    parser.add_argument("--attack", choices=["sign_flip", "scale_update", "random_update", "label_flip", "backdoor"],
                        default=None, help="make --malicious-fraction of the clients malicious (default: none)")
    parser.add_argument("--malicious-fraction", type=float, default=0.3,
                        help="share of the clients that are malicious, with --attack")
    parser.add_argument("--robust", choices=["median", "trimmed_mean", "krum", "multi_krum", "norm_bound"],
                        default=None, help="a robust aggregator instead of the weighted mean (default: none)")
    parser.add_argument("--epochs", type=int, default=10, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, default=20, help="examples per local SGD step")
    parser.add_argument("--seed", type=int, default=0,
                        help="fixes the initial weights, the shuffling and the client sampling")
    parser.add_argument("--csv", type=Path, help="write the history as CSV")
    parser.add_argument("--json", type=Path, help="write the history as JSON")
    parser.add_argument("--plot", type=Path, help="write the convergence plot as PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.lab_args = extra
    return args


def lab(extra=()) -> int:
    """Opens the course notebooks in JupyterLab; ``extra`` options go to JupyterLab (e.g. ``--no-browser``)."""
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    if not notebooks.is_dir():
        print(f"fedteach lab: no notebooks folder at {notebooks}; run it from a clone of fedteach.", file=sys.stderr)
        return 2
    # The kernels inherit it: TensorFlow starts quiet whatever a notebook imports first (see fedteach/__init__.py)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    return subprocess.call([sys.executable, "-m", "jupyter", "lab", str(notebooks), *extra], env=env)


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
        algorithm=args.algorithm, proximal_mu=(0.01 if args.mu is None else args.mu) if args.algorithm == "fedprox" else 0.0,
        server_optimizer=args.server_optimizer, dp_noise_multiplier=args.dp_noise, dp_clip_norm=args.dp_clip,
        dp_delta=args.dp_delta, quantize_bits=args.bits, attack=args.attack,
        malicious_fraction=args.malicious_fraction, robust_aggregator=args.robust)


def _fail(message: str) -> int:
    print(f"fedteach: {message}", file=sys.stderr)
    return 2


def _load_data(choice: str):
    """The train and test data that ``--data`` asks for, with one line saying which."""
    import fedteach as ft

    if choice == "emnist":
        train, test = ft.load_emnist()
    elif choice == "offline":
        train, test = ft.load_offline_digits()
        print(f"Using the offline digits dataset ({len(train.client_ids)} simulated writers): --data offline.")
    else:
        train, test = ft.load_course_data()
    return train, test


def train(args) -> int:
    """Runs the experiment described by ``args`` and prints every round."""
    import fedteach as ft
    from fedteach.experiment import Experiment

    if args.malicious_fraction != 0.3 and args.attack is None:
        return _fail("--malicious-fraction applies to an attack only: add --attack (e.g. --attack sign_flip).")
    if args.mu is not None and args.algorithm != "fedprox":
        return _fail(f"--mu applies to FedProx only: add --algorithm fedprox (got --algorithm {args.algorithm}).")
    try:
        config = config_from_args(args)
    except ValueError as error:
        return _fail(str(error))
    try:
        train_data, test_data = _load_data(args.data)
    except ft.DownloadError as error:
        return _fail(f"federated EMNIST is not available ({str(error).splitlines()[0]}); "
                     "use --data offline for the bundled digits, or --data auto to fall back to them.")
    if config.clients_per_round > len(train_data.client_ids):
        return _fail(f"--clients-per-round {config.clients_per_round} is more than the "
                     f"{len(train_data.client_ids)} clients of this dataset.")
    try:
        experiment = Experiment(train_data, test_data, config, name=config.describe())
    except ValueError as error:
        return _fail(str(error))
    measurements = experiment.aggregator.measurement_names if experiment.aggregator else ()
    print(f"Evaluation (eval: below): {experiment.evaluation_description}.", flush=True)
    start = time.perf_counter()

    def report(entry):
        line = (f"round {entry['round']:2d}, metrics=<accuracy={entry['train_accuracy']:.6g},"
                f"loss={entry['train_loss']:.6g},num_examples={entry['num_examples']}>")
        line += "".join(f" {name}={entry[name]:.6g}" for name in measurements)
        if entry.get("eval_loss") is not None:
            line += f"  eval: accuracy={entry['eval_accuracy']:.4f} loss={entry['eval_loss']:.4f}"
        if entry.get("attack_success") is not None:
            line += f" backdoor success={entry['attack_success']:.4f}"
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
        _write_outputs(args, experiment.history, f"{args.data} data, {args.algorithm}: {config.describe()}")
    done = len(experiment.history)
    print(f"{done} round{'s' if done != 1 else ''} in {time.perf_counter() - start:.1f} s "
          f"({experiment.process.path} engine)")
    return 0


def _write_outputs(args, history, title: str) -> None:
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
        plot_convergence(history, title=title, evaluated_on=history[-1].get("evaluated_on")).savefig(
            args.plot, dpi=120, bbox_inches="tight")


def main(argv=None) -> int:
    """Entry point of the ``fedteach`` command."""
    args = parse_args(argv)
    return lab(args.lab_args) if args.command == "lab" else train(args)


if __name__ == "__main__":
    sys.exit(main())
