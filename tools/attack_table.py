"""Misbehaving clients against robust aggregators, on the offline digits: prints a Markdown table.

Federated Averaging of the course's linear model (784 -> 10 softmax, zero
initial weights, client SGD at 0.02, 5 local epochs, batches of 20) on the
offline digits (200 simulated writers), 10 clients sampled uniformly per
round, ``--rounds`` rounds; the models of the last 10 rounds are evaluated on
the held-out test examples of all 200 writers, and the table shows the means
(one round's model is a noisy snapshot, Krum's especially). Two populations: the course's default, whose
writers have label-skewed data (Dirichlet alpha 1), and near-IID writers
(alpha 100), because robust aggregators assume that honest updates agree.

* Sign flipping: in every round, 30% of the round's clients (3 of 10, drawn
  afresh each round) send ``-4 Δ`` instead of their update ``Δ``.
* Backdoor (label-skewed writers only): 2% of the population (4 writers,
  fixed) stamp a 4x4 square of ink in the bottom-right corner on half of
  their examples and relabel them 0; with the boost they also send ``10 Δ``
  whenever they are sampled (model replacement, Bagdasaryan et al. 2020).
  Attack success: the share of the test examples that are not 0 which,
  with the trigger stamped on, are classified as 0 (shown for the clean
  FedAvg run too, as the base rate).

Every run is seeded (the same numbers each time on the same machine).

Usage::

    python tools/attack_table.py [--rounds 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time

import fedteach as ft  # first: it quiets TensorFlow
from fedteach import aggregators, attacks, robust

import keras  # after fedteach

CLIENTS_PER_ROUND = 10
SIGN_FLIP_FRACTION, SCALE = 0.3, 4.0
BACKDOOR_FRACTION, BOOST, TARGET = 0.02, 10.0, 0
CLIP_NORM, NOISE = 0.3, 0.5   # about the honest clients' mean update norm (0.27 late in training)
LAST = 10   # accuracy and attack success are the means over the models of the last LAST rounds
WRITERS = {1.0: "label-skewed (alpha 1)", 100.0: "near-IID (alpha 100)"}


def model_fn_for(sample_batch):
    def model_fn():
        net = keras.Sequential([keras.Input((784,)),
                                keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
        net.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.02),
                    metrics=[keras.metrics.SparseCategoricalAccuracy()])
        return ft.from_compiled_keras_model(net, sample_batch)
    return model_fn


def train(data, aggregator, rounds, seed, model_fn):
    """FedAvg with ``aggregator``, ``rounds`` rounds of CLIENTS_PER_ROUND sampled clients: yields each round's state."""
    process = ft.build_federated_averaging_process(model_fn, seed=seed, aggregator=aggregator)
    preprocess = ft.preprocess_for_tutorial(num_epochs=5, batch_size=20, shuffle_buffer=500, seed=seed)
    state = process.initialize()
    for round_num in range(1, rounds + 1):
        ids = ft.sample_clients(data.client_ids, CLIENTS_PER_ROUND, round_num=round_num, seed=seed)
        state, _ = process.next(state, ft.make_federated_data(data, ids, preprocess))
        yield round_num, state


def runs(train, alpha: float, seed: int):
    """(aggregator name, attack name, training data, aggregator) of the table's rows for one dataset."""
    f = round(SIGN_FLIP_FRACTION * CLIENTS_PER_ROUND)
    flip = attacks.sign_flip(SIGN_FLIP_FRACTION, scale=SCALE)
    flipped = f"sign flip x{SCALE:g}, {SIGN_FLIP_FRACTION:.0%} of each round"
    robust_ones = [("median", robust.median()), ("trimmed mean (beta 0.3)", robust.trimmed_mean(0.3)),
                   (f"Krum (f={f})", robust.krum(f)),
                   (f"Multi-Krum (f={f}, m={CLIENTS_PER_ROUND - f})", robust.multi_krum(f, CLIENTS_PER_ROUND - f))]
    rows = [("FedAvg (weighted mean)", "none", train, None)]
    rows += [(name, "none", train, aggregator) for name, aggregator in robust_ones]
    rows += [("FedAvg (weighted mean)", flipped, train, flip)]
    rows += [(name, flipped, train, aggregators.chain(flip, aggregator)) for name, aggregator in robust_ones]
    if alpha != 1.0:
        return rows
    poisoned = attacks.backdoor(train, BACKDOOR_FRACTION, target=TARGET, seed=seed)
    bad = attacks.malicious_clients(train.client_ids, BACKDOOR_FRACTION, seed)
    boost = attacks.scale_update(attacks.malicious_positions(bad, lambda r: ft.sample_clients(
        train.client_ids, CLIENTS_PER_ROUND, round_num=r, seed=seed)), boost=BOOST)
    writers = f"backdoor, {len(bad)} of {len(train.client_ids)} writers"
    boosted = f"{writers}, boost x{BOOST:g}"
    return rows + [("FedAvg (weighted mean)", writers, poisoned, None),
                   ("FedAvg (weighted mean)", boosted, poisoned, boost),
                   (f"norm bound (C={CLIP_NORM:g})", boosted, poisoned,
                    aggregators.chain(boost, robust.norm_bound(CLIP_NORM))),
                   (f"dp_mean (z={NOISE:g}, C={CLIP_NORM:g})", boosted, poisoned,
                    aggregators.chain(boost, aggregators.dp_mean(NOISE, CLIP_NORM)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    eval_preprocess = ft.preprocess_for_tutorial(num_epochs=1, batch_size=100, shuffle_buffer=0)
    print("| writers | aggregator | attack | clean accuracy | attack success |\n|---|---|---|---|---|", flush=True)
    start = time.perf_counter()
    for alpha, writers in WRITERS.items():
        train_data, test = ft.load_offline_digits(seed=args.seed, alpha=alpha)
        sample = next(iter(ft.make_federated_data(test, test.client_ids[:1], eval_preprocess)[0]))
        model_fn = model_fn_for(sample)
        evaluation = ft.build_federated_evaluation(model_fn)
        for name, attack, data, aggregator in runs(train_data, alpha, args.seed):
            results = [attacks.evaluate_backdoor(evaluation, state.model, test, test.client_ids, eval_preprocess,
                                                 TARGET)
                       for round_num, state in train(data, aggregator, args.rounds, args.seed, model_fn)
                       if round_num > args.rounds - LAST]
            result = {key: sum(r[key] for r in results) / len(results) for key in results[0]}
            success = f"{result['attack_success']:.1%}" if alpha == 1.0 and (
                "backdoor" in attack or (attack == "none" and aggregator is None)) else "–"
            print(f"| {writers} | {name} | {attack} | {result['clean_accuracy']:.1%} | {success} |", flush=True)
    print(f"{args.rounds} rounds per run, {time.perf_counter() - start:.0f} s in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
