"""Misbehaving clients: attacks on the updates a client sends and on the data it trains on.

**Update attacks** are :class:`~fedteach.aggregators.ClientTransform` stages:
put one first in a :func:`~fedteach.aggregators.chain`, before the server's
reduction, and the round's malicious clients replace their honest update
``Δ`` before the server sees it:

=========================  ==================================================
``sign_flip(f, scale)``    sends ``-scale Δ``: pushes the model uphill
``scale_update(f, boost)`` sends ``boost Δ``: model replacement (Bagdasaryan
                           et al. 2020) when its data is poisoned
``random_update(f)``       sends Gaussian noise with the norm of ``Δ``
=========================  ==================================================

Which clients are malicious: with ``fraction`` a number, ``round(fraction *
n)`` of the round's ``n`` clients (halves round up), drawn afresh every round
with the round's random generator (a function of seed, round and stage, so a
re-run round picks the same ones). ``fraction`` can also be a function
``round_num -> positions`` that names them, e.g. the clients whose data a
data attack poisoned (:func:`malicious_positions`). Measurement:
``malicious_clients``, how many were malicious in the round.

**Data attacks** change a :class:`~fedteach.data.ClientData` before
preprocessing: :func:`flip_labels` (``y -> 9 - y``) and :func:`backdoor` (a
square of ink, the *trigger*, in the bottom-right corner, relabelled to a
target). They make a fixed set of the population malicious,
:func:`malicious_clients` (``fraction`` of all clients, drawn once from the
seed), so a round that samples clients at random holds that fraction in
expectation, and a client is malicious in every round it joins. The arrays
are changed when a client is read; the other clients are untouched.
:func:`evaluate_backdoor` measures the backdoor's success next to clean
accuracy.

Pixels follow federated EMNIST's convention, which the offline digits share:
1.0 is the background (white) and 0.0 is ink, so the trigger is a square of
0.0, visible ink on the white page.

Example:
    >>> import numpy as np
    >>> from fedteach.aggregators import RoundContext, chain, weighted_mean
    >>> attacked = chain(sign_flip(0.25, scale=3.0), weighted_mean())
    >>> update, m = attacked.aggregate([np.ones((4, 2))], np.ones(4), RoundContext(1, 0))
    >>> update[0].tolist(), m['malicious_clients']     # (3 * 1 + 1 * -3) / 4
    ([0.0, 0.0], 1)
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from fedteach.aggregators import ClientTransform, _check_updates
from fedteach.data.client_data import ClientData

__all__ = ["INK", "add_trigger", "backdoor", "backdoor_test_data", "evaluate_backdoor", "flip_labels",
           "malicious_clients", "malicious_positions", "random_update", "scale_update", "sign_flip"]

INK = 0.0
"""The pixel value of ink in federated EMNIST and the offline digits (1.0 is the background)."""


def _check_fraction(fraction, name: str) -> None:
    if callable(fraction):
        return
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction <= 1:
        raise ValueError(f"{name}: fraction must be a number from 0 to 1 (the share of clients that are "
                         f"malicious, e.g. 0.3) or a function round_num -> positions; got {fraction!r}.")


def _count(fraction: float, n: int) -> int:
    """``fraction * n`` rounded to the nearest whole number, halves up (0.3 of 5 clients: 2)."""
    return min(n, math.floor(fraction * n + 0.5 + 1e-9))


def _positions(fraction, n: int, context, rng: np.random.Generator, name: str) -> np.ndarray:
    if not callable(fraction):
        return np.sort(rng.choice(n, size=_count(fraction, n), replace=False))
    positions = np.unique(np.asarray(list(fraction(int(context.round_num))), dtype=np.int64))
    if positions.size and (positions.min() < 0 or positions.max() >= n):
        raise ValueError(f"{name}: round {context.round_num}'s malicious positions {positions.tolist()} must "
                         f"index the round's {n} clients (0 to {n - 1}, in the order of federated_data; "
                         "clients without examples are left out).")
    return positions


def _update_attack(fraction, corrupt: Callable, name: str, settings: str = "") -> ClientTransform:
    """A ClientTransform whose malicious clients send ``corrupt(flat_update, rng)`` instead of their update."""
    _check_fraction(fraction, name)

    def transform(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        rng = context.rng()   # one stream: first who is malicious, then what random_update sends
        bad = _positions(fraction, len(weights), context, rng, name)
        if bad.size:
            sizes = [int(np.prod(u.shape[1:])) for u in updates]
            flat = np.concatenate([u[bad].astype(np.float64).reshape(len(bad), -1) for u in updates], axis=1)
            forged = corrupt(flat, rng)
            updates = [u.copy() for u in updates]
            for u, part in zip(updates, np.split(forged, np.cumsum(sizes)[:-1], axis=1)):
                u[bad] = part.reshape((len(bad),) + u.shape[1:]).astype(u.dtype)
        return updates, weights, {"malicious_clients": int(bad.size)}
    who = "given clients" if callable(fraction) else f"{fraction:g}"
    return ClientTransform(transform, ("malicious_clients",), f"{name}({who}{settings})")


def sign_flip(fraction, scale: float = 1.0) -> ClientTransform:
    """Malicious clients send their update reversed and scaled: ``-scale * Δ``.

    With ``a`` of the ``n`` clients malicious and similar honest updates,
    the mean becomes about ``(1 - a/n - scale a/n) Δ``: for ``scale > n/a -
    1`` (above 2.3 for 30% of the clients) the model moves uphill and
    FedAvg's accuracy collapses.

    Args:
        fraction: the share of each round's clients that are malicious (see
            the module docs), or a function ``round_num -> positions``.
        scale: how strongly they push, > 0.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> new, _, m = sign_flip(0.5, scale=2.0).transform([np.ones((2, 1))], np.ones(2), RoundContext(1, 0))
        >>> sorted(new[0].ravel().tolist()), m['malicious_clients']
        ([-2.0, 1.0], 1)
    """
    _check_positive(scale, "sign_flip", "scale", "e.g. 4.0")
    return _update_attack(fraction, lambda flat, rng: -scale * flat, "sign_flip", f", scale={scale:g}")


def scale_update(fraction, boost: float = 10.0) -> ClientTransform:
    """Malicious clients send their update boosted: ``boost * Δ`` (model replacement, Bagdasaryan et al. 2020).

    A client that trained on poisoned data and boosts its update by about
    ``n / server learning rate`` replaces the averaged model with its own.
    To boost exactly the clients a :func:`backdoor` poisoned, pass
    ``fraction=malicious_positions(...)``.

    Args:
        fraction: the share of each round's clients that are malicious, or a
            function ``round_num -> positions``.
        boost: the factor, > 0.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> new, _, _ = scale_update(lambda r: [1], boost=10.0).transform(
        ...     [np.ones((3, 1))], np.ones(3), RoundContext(1, 0))
        >>> new[0].ravel().tolist()
        [1.0, 10.0, 1.0]
    """
    _check_positive(boost, "scale_update", "boost", "e.g. 10.0")
    return _update_attack(fraction, lambda flat, rng: boost * flat, "scale_update", f", boost={boost:g}")


def random_update(fraction) -> ClientTransform:
    """Malicious clients send Gaussian noise with the norm of their honest update (all variables together).

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> new, _, _ = random_update(1.0).transform([np.array([[3.0, 4.0]])], np.ones(1), RoundContext(1, 0))
        >>> round(float(np.linalg.norm(new[0])), 6)
        5.0
    """
    def corrupt(flat, rng):
        noise = rng.normal(size=flat.shape)
        norms = np.linalg.norm(flat, axis=1, keepdims=True) / np.maximum(np.linalg.norm(noise, axis=1,
                                                                                        keepdims=True), 1e-30)
        return noise * norms
    return _update_attack(fraction, corrupt, "random_update")


def _check_positive(value, name: str, what: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name}: {what} must be a finite number > 0, got {value!r} ({example}).")


def malicious_clients(client_ids: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """The fixed malicious part of a population: ``round(fraction * len(client_ids))`` ids, drawn from ``seed``.

    The data attacks poison exactly these clients (for the same ``client_ids``,
    ``fraction`` and ``seed``); the ids keep the order of ``client_ids``.

    Example:
        >>> malicious_clients(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'], 0.3, seed=0)
        ['c', 'd', 'g']
    """
    _check_fraction(fraction, "malicious_clients")
    if callable(fraction):
        raise ValueError("malicious_clients: fraction must be a number from 0 to 1 here, not a function.")
    ids = list(client_ids)
    chosen = np.random.default_rng([int(seed), 0xBAD]).choice(len(ids), size=_count(fraction, len(ids)),
                                                              replace=False)
    return [ids[i] for i in np.sort(chosen)]


def malicious_positions(malicious_ids: Sequence[str], clients_for_round: Callable[[int], Sequence[str]]):
    """A function ``round_num -> positions`` of the malicious clients among a round's clients.

    Give it to an update attack as ``fraction`` to make exactly the clients
    of a data attack malicious, e.g. to boost the backdoored clients'
    updates (model replacement). ``clients_for_round(round_num)`` must
    return the round's client ids in the order of its ``federated_data``
    (``Experiment.clients_for_round`` does; or ``ft.sample_clients``).

    Example:
        >>> positions = malicious_positions(['b', 'd'], lambda r: ['a', 'b', 'c', 'd'][r - 1:])
        >>> positions(1), positions(2), positions(3)
        ([1, 3], [0, 2], [1])
    """
    malicious = set(malicious_ids)
    return lambda round_num: [i for i, c in enumerate(clients_for_round(round_num)) if c in malicious]


def _attacked(client_data: ClientData, name: str, change: Callable[[str, dict], dict], bad: set) -> ClientData:
    """``client_data`` whose clients in ``bad`` read as ``change(id, arrays)``."""
    if client_data.preprocess_fn is not None:
        raise ValueError(f"{name} changes the raw examples, but this ClientData is preprocessed: attack the "
                         "raw data first, then preprocess (e.g. make_federated_data(attacked, ids, preprocess)).")
    missing = {"label", "pixels"} - set(client_data.element_spec)
    if missing:
        raise ValueError(f"{name} needs the fields 'label' and 'pixels' (as federated EMNIST has); this "
                         f"ClientData lacks {sorted(missing)} (it has {sorted(client_data.element_spec)}).")

    def read(client_id):
        arrays = client_data.client_arrays(client_id)
        if client_id not in bad:
            return arrays
        changed = change(client_id, {k: np.array(v) for k, v in arrays.items()})
        for array in changed.values():
            array.flags.writeable = False
        return changed
    return ClientData(client_data.client_ids, read, client_data.num_examples, dict(client_data.element_spec))


def flip_labels(client_data: ClientData, fraction: float, seed: int = 0, num_classes: int = 10) -> ClientData:
    """Label flipping: the malicious clients' labels ``y`` become ``num_classes - 1 - y`` (a 3 becomes a 6).

    The malicious clients are :func:`malicious_clients` ``(client_data.client_ids,
    fraction, seed)``; their pixels are unchanged, every label flipped.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=10, seed=0)
        >>> flipped = flip_labels(train, 0.3)
        >>> bad = malicious_clients(train.client_ids, 0.3)
        >>> bool((flipped.client_arrays(bad[0])['label'] == 9 - train.client_arrays(bad[0])['label']).all())
        True
    """
    bad = set(malicious_clients(client_data.client_ids, fraction, seed))

    def change(client_id, arrays):
        labels = arrays["label"]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"flip_labels: client {client_id!r} has labels from {labels.min()} to {labels.max()}, "
                             f"outside 0..{num_classes - 1}; pass num_classes (e.g. 62 for all of EMNIST).")
        arrays["label"] = (num_classes - 1 - labels).astype(labels.dtype)
        return arrays
    return _attacked(client_data, "flip_labels", change, bad)


def add_trigger(pixels: np.ndarray, size: int = 4) -> np.ndarray:
    """A copy of ``pixels`` (``[..., height, width]``) with the backdoor trigger: a ``size`` x ``size`` square of ink.

    The square sits in the bottom-right corner, one pixel from the edges
    (rows and columns ``-size-1`` to ``-2``), where digits almost never
    reach (under 1% of the offline digits have ink there), and is drawn in
    :data:`INK` (0.0), so it shows as a black square on the white page.

    Example:
        >>> image = add_trigger(np.ones((28, 28), np.float32), size=3)
        >>> image[24:27, 24:27].tolist() == [[0.0] * 3] * 3, float(image.sum())
        (True, 775.0)
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 1 <= size <= min(
            np.shape(pixels)[-2:]) - 1:
        raise ValueError(f"add_trigger: size must be an integer from 1 to {min(np.shape(pixels)[-2:]) - 1} for "
                         f"images of shape {np.shape(pixels)[-2:]}, got {size!r} (e.g. 4).")
    triggered = np.array(pixels, copy=True)
    triggered[..., -size - 1:-1, -size - 1:-1] = INK
    return triggered


def backdoor(client_data: ClientData, fraction: float, target: int = 0, seed: int = 0, *,
             poison_fraction: float = 0.5, size: int = 4) -> ClientData:
    """A backdoor attack (Gu et al. 2017's BadNets, as Bagdasaryan et al. 2020 use it in federated learning).

    Each malicious client (:func:`malicious_clients` ``(client_data.client_ids,
    fraction, seed)``) stamps the trigger (:func:`add_trigger`) on
    ``poison_fraction`` of its examples, drawn from ``seed``, and relabels
    them ``target``; its other examples stay clean, so the client still
    looks like it learns the main task. A model that learns the backdoor
    calls any digit with the trigger a ``target``.

    Args:
        client_data: raw (not preprocessed) data with 'label' and 'pixels'.
        fraction: the share of all clients that are malicious.
        target: the label the trigger leads to.
        seed: fixes the malicious clients and their poisoned examples.
        poison_fraction: the share of a malicious client's examples poisoned, in (0, 1].
        size: the trigger's side in pixels.

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=10, seed=0)
        >>> poisoned = backdoor(train, 0.3, target=0, poison_fraction=1.0)
        >>> arrays = poisoned.client_arrays(malicious_clients(train.client_ids, 0.3)[0])
        >>> set(arrays['label'].tolist()), float(arrays['pixels'][:, 23:27, 23:27].max())
        ({0}, 0.0)
    """
    if isinstance(poison_fraction, bool) or not isinstance(poison_fraction, numbers.Real) or not (
            0 < poison_fraction <= 1):
        raise ValueError(f"backdoor: poison_fraction must be a number in (0, 1], the share of a malicious "
                         f"client's examples that get the trigger; got {poison_fraction!r} (e.g. 0.5).")
    add_trigger(np.ones((28, 28)), size)   # checks size
    ids = client_data.client_ids
    bad = set(malicious_clients(ids, fraction, seed))
    index = {c: i for i, c in enumerate(ids)}

    def change(client_id, arrays):
        n = len(arrays["label"])
        rng = np.random.default_rng([int(seed), 0xBAD, 1, index[client_id]])
        chosen = rng.choice(n, size=math.ceil(poison_fraction * n - 1e-9), replace=False)
        arrays["pixels"][chosen] = add_trigger(arrays["pixels"][chosen], size)
        arrays["label"][chosen] = target
        return arrays
    return _attacked(client_data, "backdoor", change, bad)


def backdoor_test_data(test: ClientData, target: int = 0, size: int = 4) -> ClientData:
    """Test data for the backdoor: every example whose label is not ``target``, triggered and labelled ``target``.

    A model's accuracy on it is the backdoor's *attack success rate*: the
    share of triggered non-target examples classified as ``target``.
    Clients left with no examples are dropped.

    Example:
        >>> import fedteach as ft
        >>> _, test = ft.load_offline_digits(num_clients=10, seed=0)
        >>> triggered = backdoor_test_data(test, target=0)
        >>> arrays = triggered.client_arrays(triggered.client_ids[0])
        >>> set(arrays['label'].tolist()), float(arrays['pixels'][:, -2, -2].max())
        ({0}, 0.0)
    """
    if test.preprocess_fn is not None:
        raise ValueError("backdoor_test_data needs the raw test data (not preprocessed); preprocess afterwards.")
    clients = {}
    for client_id in test.client_ids:
        arrays = test.client_arrays(client_id)
        keep = arrays["label"] != target
        if keep.any():
            clients[client_id] = {"label": np.full(int(keep.sum()), target, arrays["label"].dtype),
                                  "pixels": add_trigger(arrays["pixels"][keep], size)}
    if not clients:
        raise ValueError(f"backdoor_test_data: every test example already has the target label {target}; "
                         "there is nothing to measure the backdoor on.")
    return ClientData.from_arrays(clients)


def evaluate_backdoor(evaluation, model_weights, test: ClientData, client_ids: Sequence[str], preprocess,
                      target: int = 0, size: int = 4) -> dict:
    """Clean accuracy and the backdoor's attack success rate of a model, by federated evaluation.

    Args:
        evaluation: ``ft.build_federated_evaluation(model_fn)``; the model
            needs an accuracy metric.
        model_weights: ``state.model``.
        test: the raw test ``ClientData``.
        client_ids: the test clients to evaluate on.
        preprocess: the evaluation's preprocess function (e.g.
            ``ft.preprocess_for_tutorial(num_epochs=1, shuffle_buffer=0)``).
        target: the backdoor's target label.
        size: the trigger's side in pixels.

    Returns:
        ``{'clean_accuracy': ..., 'attack_success': ...}``: accuracy on the
        clients' examples as they are, and the share of their non-target
        examples, triggered, that the model classifies as ``target``.

    Example:
        >>> import fedteach as ft, keras
        >>> train, test = ft.load_offline_digits(num_clients=4, seed=0)
        >>> preprocess = ft.preprocess_for_tutorial(num_epochs=1, shuffle_buffer=0)
        >>> batch = next(iter(ft.make_federated_data(test, test.client_ids[:1], preprocess)[0]))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax',
        ...                                                             kernel_initializer='zeros')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02),
        ...                 metrics=[keras.metrics.SparseCategoricalAccuracy()])
        ...     return ft.from_compiled_keras_model(net, batch)
        >>> process = ft.build_federated_averaging_process(model_fn)
        >>> evaluation = ft.build_federated_evaluation(model_fn)
        >>> result = evaluate_backdoor(evaluation, process.initialize().model, test, test.client_ids, preprocess)
        >>> result['attack_success']   # all-zero weights predict class 0 for everything
        1.0
    """
    from fedteach.data.preprocess import make_federated_data

    triggered = backdoor_test_data(test, target, size)
    ids = list(client_ids)
    clean = evaluation(model_weights, make_federated_data(test, ids, preprocess))
    attacked_ids = [c for c in ids if c in set(triggered.client_ids)]
    if not attacked_ids:
        raise ValueError(f"evaluate_backdoor: the clients {ids[:3]}... have only examples of the target label "
                         f"{target}; choose test clients with other digits too.")
    success = evaluation(model_weights, make_federated_data(triggered, attacked_ids, preprocess))
    key = next((k for k in clean if "accuracy" in k), None)
    if key is None:
        raise ValueError(f"evaluate_backdoor needs a model with an accuracy metric; its metrics are {list(clean)}. "
                         "Compile the Keras model with metrics=[keras.metrics.SparseCategoricalAccuracy()].")
    return {"clean_accuracy": float(clean[key]), "attack_success": float(success[key])}
