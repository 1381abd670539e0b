"""Client drift on label-skewed digits: FedAvg, FedProx and SCAFFOLD, as a Markdown table.

The data: :func:`fedteach.drift.non_iid_digits` (the offline digits of 100
simulated writers, pooled and dealt to 20 clients in two label-sorted shards
each: mostly two labels per client), tested on those writers' held-out
examples. The model: the course's linear model (784 -> 10 softmax, zero
initial weights), client SGD at ``--lr`` for ``--epochs`` local epochs of
batches of 20, server SGD at 1.0. FedProx uses ``mu = --mu``; SCAFFOLD
``total_clients = 20``. Two settings: every client in every round, and
``--sampled`` clients sampled per round (``ft.sample_clients``, seeded).

Printed per setting and algorithm: the first round whose test accuracy
reaches ``--target`` ("-" if none), the best and the final test accuracy,
and the mean drift over the rounds (mean distance of the clients' models to
their mean, ``ft.drift.DriftHistory.drift``). ``--plot PATH`` saves
``ft.drift.plot`` of the first setting.

Usage::

    python tools/drift_table.py [--rounds 30] [--target 0.6] [--plot drift.png]
"""
from __future__ import annotations

import argparse
import time

import fedteach as ft  # first: it quiets TensorFlow

import keras  # noqa: E402
import numpy as np  # noqa: E402

CLIENTS, BATCH = 20, 20


def processes(data, learning_rate: float, mu: float, seed: int) -> dict:
    """The three algorithms on the course's linear model, each a fresh process."""
    def model_fn():
        net = keras.Sequential([keras.Input((784,)),
                                keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(learning_rate),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
        return ft.from_compiled_keras_model(net, next(iter(data[0])))

    return {"FedAvg": ft.build_federated_averaging_process(model_fn, seed=seed),
            f"FedProx (mu={mu:g})": ft.build_fedprox_process(model_fn, mu=mu, seed=seed),
            "SCAFFOLD": ft.build_scaffold_process(model_fn, total_clients=CLIENTS, seed=seed)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--mu", type=float, default=0.1)
    parser.add_argument("--sampled", type=int, default=5, help="clients per round in the second setting")
    parser.add_argument("--target", type=float, default=0.6, help="test accuracy to reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="save the drift plot of the first setting to this PNG")
    args = parser.parse_args(argv)

    train, test = ft.drift.non_iid_digits(num_clients=CLIENTS, labels_per_client=2, seed=args.seed)
    preprocess = ft.preprocess_for_tutorial(num_epochs=args.epochs, batch_size=BATCH, seed=args.seed)
    data = ft.make_federated_data(train, train.client_ids, preprocess)
    test_data = ft.make_federated_data(test, test.client_ids, ft.preprocess_for_tutorial(1, 100, 0))
    print(f"{CLIENTS} clients, {sum(train.num_examples(c) for c in train.client_ids)} train / "
          f"{test.num_examples('test')} test examples; linear model, client SGD {args.lr:g}, {args.epochs} local "
          f"epochs, batch {BATCH}; {args.rounds} rounds; target test accuracy {args.target:g}\n")
    print("| clients per round | algorithm | rounds to target | best accuracy | final accuracy | mean drift | time |")
    print("|---|---|---|---|---|---|---|")
    for setting, per_round in enumerate((None, args.sampled)):
        histories = {}
        for name, process in processes(data, args.lr, args.mu, args.seed).items():
            start = time.perf_counter()
            history = ft.drift.track(process, data, rounds=args.rounds, test_data=test_data,
                                     clients_per_round=per_round, seed=args.seed)
            seconds = time.perf_counter() - start
            histories[name] = history
            reached = history.rounds_to(args.target)
            print(f"| {per_round or CLIENTS} | {name} | {reached or '-'} | {max(history.test_accuracy):.3f} | "
                  f"{history.test_accuracy[-1]:.3f} | {np.mean(history.drift):.3f} | {seconds:.0f} s |", flush=True)
        if setting == 0 and args.plot:
            ft.drift.plot(histories).savefig(args.plot, dpi=80)


if __name__ == "__main__":
    main()
