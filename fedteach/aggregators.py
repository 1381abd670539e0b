"""Aggregators: how the server combines the clients' updates, composable with any algorithm.

After local training, client ``c`` sends its update ``Δ_c = w_c - w_global``
and its number of examples ``n_c``. An *aggregator* turns the updates of a
round into the one update the server optimizer applies. FedAvg's is the
example-weighted mean; the others change that one piece:

====================  ======================================================
``weighted_mean()``   ``Σ n_c Δ_c / Σ n_c`` (FedAvg; the default)
``unweighted_mean()`` ``Σ Δ_c / C``: every client counts the same
``clip(C)``           scales each ``Δ_c`` down to L2 norm at most ``C``
``quantize(bits)``    each ``Δ_c`` sent with ``bits`` bits per number
``dp_mean(z, C)``     clip to ``C``, unweighted mean, Gaussian noise of
                      std ``z * C / clients`` (DP-FedAvg, McMahan et al. 2018)
====================  ======================================================

Design (optax-style): a stage is a small named tuple of plain functions on
NumPy arrays. A :class:`ClientTransform` maps the per-client updates to new
per-client updates (``clip``, ``quantize``); an :class:`Aggregator` reduces
them to one update (``weighted_mean``, ``unweighted_mean``, ``dp_mean``).
:func:`chain` runs transforms in order and ends with a reduction, e.g.
``chain(clip(1.0), quantize(8), unweighted_mean())``. Two kinds instead of one
uniform signature keep each piece readable: a map over clients, then one
reduction, as TFF's aggregation factories nest.

The built-in stages keep no state between rounds: everything they need is in
the :class:`RoundContext` (round number and seed), so a round re-run after a
restore draws the same noise, and the privacy accountant's epsilon after
round ``t`` follows from ``t`` alone. Every stage reports *measurements*
(``clipped_fraction``, ``bytes_sent``, ``epsilon``...) that appear in the
round's metrics.

Updates are lists of arrays with a leading client axis ``[clients, ...]``,
one per trainable variable; weights are the clients' example counts.

Example:
    >>> import numpy as np
    >>> updates = [np.array([[3.0, 4.0], [0.0, 1.0]])]   # 2 clients, one variable of 2 numbers
    >>> agg = chain(clip(1.0), unweighted_mean())
    >>> mean, measurements = agg.aggregate(updates, np.array([10.0, 30.0]), RoundContext(1, 0))
    >>> mean[0].round(3).tolist(), measurements['clipped_fraction']
    ([0.3, 0.9], 0.5)
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import numpy as np

__all__ = ["Aggregator", "ClientTransform", "RoundContext", "chain", "clip", "compressed_mean", "dp_epsilon",
           "dp_mean", "noise_multiplier_for_epsilon", "quantize", "unweighted_mean", "weighted_mean"]


class RoundContext(NamedTuple):
    """What an aggregator may know about the round: its number (1-based) and the process seed.

    Example:
        >>> ctx = RoundContext(round_num=3, seed=0)
        >>> float(ctx.rng().random()) == float(RoundContext(3, 0).rng().random())
        True
    """

    round_num: int
    seed: int
    stage: int = 0

    def rng(self) -> np.random.Generator:
        """This stage's random generator in this round: a function of (seed, round, stage) only."""
        return np.random.default_rng([int(self.seed), int(self.round_num), 0xA66, int(self.stage)])


class ClientTransform(NamedTuple):
    """A map over the clients' updates: ``transform(updates, weights, context) -> (updates, weights, measurements)``.

    ``measurements`` is a dict of numbers; ``measurement_names`` lists its keys.

    Example:
        >>> double = ClientTransform(lambda u, w, ctx: ([2 * x for x in u], w, {}), (), 'double')
        >>> chain(double, weighted_mean()).aggregate([np.ones((2, 1))], np.ones(2), RoundContext(1, 0))[0]
        [array([2.])]
    """

    transform: Callable
    measurement_names: tuple = ()
    name: str = "transform"


class Aggregator(NamedTuple):
    """A reduction: ``aggregate(updates, weights, context) -> (update, measurements)``.

    Attributes:
        aggregate: the function; ``updates`` are arrays ``[clients, ...]``,
            ``weights`` the clients' example counts, ``update`` a list of
            arrays without the client axis.
        needs_clients: False when the engine's own example-weighted average
            gives the same result (then the engines need not return the
            per-client models).
        measurement_names: the keys of ``measurements``.
        name: a short description.

    Example:
        >>> agg = weighted_mean()
        >>> agg.aggregate([np.array([[0.0], [4.0]])], np.array([3.0, 1.0]), RoundContext(1, 0))
        ([array([1.])], {})
    """

    aggregate: Callable
    needs_clients: bool = True
    measurement_names: tuple = ()
    name: str = "aggregator"


def _check_updates(updates, weights):
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or any(np.shape(u)[0] != len(weights) for u in updates):
        raise ValueError(f"updates must be arrays [clients, ...] with one weight per client; got shapes "
                         f"{[np.shape(u) for u in updates]} and {len(weights)} weights.")
    return [np.asarray(u) for u in updates], weights


def _mean(updates, share):
    return [np.tensordot(share, u.astype(np.float64), axes=1).astype(u.dtype) for u in updates]


def weighted_mean() -> Aggregator:
    """The example-weighted mean ``Σ n_c Δ_c / Σ n_c``: FedAvg's aggregation and the default.

    Example:
        >>> weighted_mean().aggregate([np.array([[1.0], [3.0]])], [1, 3], RoundContext(1, 0))[0]
        [array([2.5])]
    """
    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        if weights.sum() <= 0:
            raise ValueError("weighted_mean: the clients' weights sum to 0 (no examples in this round).")
        return _mean(updates, weights / weights.sum()), {}
    return Aggregator(aggregate, needs_clients=False, name="weighted mean")


def unweighted_mean() -> Aggregator:
    """The plain mean ``Σ Δ_c / C``: a client with 10 examples counts as much as one with 1000.

    Example:
        >>> unweighted_mean().aggregate([np.array([[1.0], [3.0]])], [1, 3], RoundContext(1, 0))[0]
        [array([2.])]
    """
    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        return _mean(updates, np.full(len(weights), 1.0 / len(weights))), {}
    return Aggregator(aggregate, name="unweighted mean")


def _norms(updates) -> np.ndarray:
    return np.sqrt(sum(np.sum(np.square(u.astype(np.float64)).reshape(len(u), -1), axis=1) for u in updates))


def _clip(updates, clip_norm):
    norms = _norms(updates)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-30))
    clipped = [(u * scale.reshape((-1,) + (1,) * (u.ndim - 1))).astype(u.dtype) for u in updates]
    return clipped, norms


def clip(clip_norm: float) -> ClientTransform:
    """Scales each client's whole update (all variables together) to L2 norm at most ``clip_norm``.

    Bounds how much one client can move the model (robustness, and the
    sensitivity that differential privacy needs). Measurements:
    ``clipped_fraction`` (clients whose update was scaled down) and
    ``mean_update_norm`` (before clipping; a guide for choosing ``clip_norm``).

    Example:
        >>> updates = [np.array([[3.0, 4.0], [0.3, 0.4]])]
        >>> new, _, m = clip(1.0).transform(updates, np.ones(2), RoundContext(1, 0))
        >>> new[0].round(6).tolist(), m['clipped_fraction']
        ([[0.6, 0.8], [0.3, 0.4]], 0.5)
    """
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r} (e.g. 1.0).")

    def transform(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        clipped, norms = _clip(updates, clip_norm)
        return clipped, weights, {"clipped_fraction": float(np.mean(norms > clip_norm)),
                                  "mean_update_norm": float(np.mean(norms))}
    return ClientTransform(transform, ("clipped_fraction", "mean_update_norm"), f"clip({clip_norm:g})")


def quantize(bits: int) -> ClientTransform:
    """Uniform stochastic quantization of each client update to ``bits`` bits per number.

    Per client and per variable, the numbers are mapped onto ``2**bits``
    levels evenly spaced between their min and max (both sent as float32),
    and each number is rounded up or down at random with the probabilities
    that keep it unbiased: ``E[q] = x`` and ``|q - x| <= (max - min) /
    (2**bits - 1)``. The server receives the dequantized values.
    Measurements: ``bytes_sent`` (the round's clients together, with the
    min/max header) and ``bytes_uncompressed`` (as float32).

    Example:
        >>> u = [np.array([[0.0, 0.5, 1.0]])]
        >>> q, _, m = quantize(1).transform(u, np.ones(1), RoundContext(1, 0))
        >>> sorted(set(q[0].ravel().tolist()) | {0.0, 1.0}), m['bytes_sent'], m['bytes_uncompressed']
        ([0.0, 1.0], 9, 12)
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 1 to 16, got {bits!r} (e.g. 8).")
    levels = 2 ** int(bits) - 1

    def transform(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        out, sent, raw = [], 0, 0
        rng = context.rng()
        for u in updates:
            clients = len(u)
            flat = u.reshape(clients, -1)
            q = np.empty(flat.shape, u.dtype)
            # Client by client, in float64 buffers reused across clients (a CNN's update is millions of numbers:
            # fresh temporaries for every operation cost more than the arithmetic); the random numbers are drawn
            # in the same order as for all clients at once.
            t, low, draw = (np.empty(flat.shape[1]) for _ in range(3))
            for c in range(clients):
                np.copyto(t, flat[c])
                lo, hi = t.min(), t.max()
                step = (hi - lo) / levels
                rng.random(out=draw)
                if not step > 0:  # all numbers equal (or not finite): sent as they are
                    q[c] = flat[c]
                    continue
                t -= lo
                t /= step
                np.floor(t, out=low)
                t -= low                             # the fraction above the lower level
                low += draw < t                      # rounded up with that probability
                np.minimum(low, levels, out=low)
                low *= step
                low += lo
                q[c] = low
            out.append(q.reshape(u.shape))
            sent += clients * (math.ceil(flat.shape[1] * bits / 8) + 8)
            raw += clients * flat.shape[1] * 4
        return out, weights, {"bytes_sent": int(sent), "bytes_uncompressed": int(raw)}
    return ClientTransform(transform, ("bytes_sent", "bytes_uncompressed"), f"quantize({bits} bits)")


def chain(*stages) -> Aggregator:
    """Runs client transforms in order, then one reduction; returns an :class:`Aggregator`.

    The last stage must be an :class:`Aggregator` (a reduction); if every
    stage is a :class:`ClientTransform`, :func:`weighted_mean` is added.
    Stage ``i`` gets ``context._replace(stage=i)``, so its randomness ``context.rng()`` is its own. Measurements of
    all stages are merged (later stages win on equal names).

    Example:
        >>> agg = chain(clip(1.0), quantize(8))
        >>> agg.name, agg.measurement_names
        ('clip(1) -> quantize(8 bits) -> weighted mean', ('clipped_fraction', 'mean_update_norm', 'bytes_sent', 'bytes_uncompressed'))
    """
    if not stages:
        return weighted_mean()
    for stage in stages:
        if not isinstance(stage, (ClientTransform, Aggregator)):
            raise TypeError(f"chain() takes ClientTransforms (clip, quantize) and ends with an Aggregator "
                            f"(weighted_mean, unweighted_mean, dp_mean); got {type(stage).__name__}.")
    if isinstance(stages[-1], ClientTransform):
        stages = stages + (weighted_mean(),)
    misplaced = [s.name for s in stages[:-1] if isinstance(s, Aggregator)]
    if misplaced:
        raise ValueError(f"only the last stage of chain() may reduce the clients' updates to one; {misplaced} "
                         "come earlier. Put clip/quantize first and one mean last.")
    transforms, reducer = stages[:-1], stages[-1]

    def aggregate(updates, weights, context):
        measurements = {}
        for i, stage in enumerate(transforms):
            updates, weights, m = stage.transform(updates, weights, context._replace(stage=i))
            measurements.update(m)
        update, m = reducer.aggregate(updates, weights, context._replace(stage=len(transforms)))
        measurements.update(m)
        return update, measurements

    names = tuple(dict.fromkeys(n for s in stages for n in s.measurement_names))
    return Aggregator(aggregate, needs_clients=bool(transforms) or reducer.needs_clients,
                      measurement_names=names, name=" -> ".join(s.name for s in stages))


def compressed_mean(bits: int) -> Aggregator:
    """The example-weighted mean of the updates quantized to ``bits`` bits: ``chain(quantize(bits), weighted_mean())``.

    Example:
        >>> compressed_mean(4).name
        'quantize(4 bits) -> weighted mean'
    """
    return chain(quantize(bits), weighted_mean())


@functools.lru_cache(maxsize=4096)
def dp_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float = 1e-5,
               accountant: str = "rdp") -> float:
    """Epsilon of DP-FedAvg after ``rounds`` rounds, from Google's ``dp_accounting`` library.

    Each round is a Poisson-sampled Gaussian mechanism
    (``PoissonSampledDpEvent(q, GaussianDpEvent(z))``) composed ``rounds``
    times, as in McMahan et al. (2018) and TensorFlow Privacy. Client-level
    privacy: the guarantee covers adding or removing one client's whole data.

    Args:
        noise_multiplier: ``z``, the noise std divided by the clip norm.
        sampling_rate: ``q``, clients per round / total clients (1.0: all clients every round).
        rounds: rounds so far.
        delta: the target delta (at most about 1 / total clients).
        accountant: ``'rdp'`` (Rényi DP, fast, slightly loose) or ``'pld'``
            (privacy loss distributions, tighter, slower).

    Returns:
        epsilon (``inf`` when ``noise_multiplier`` is 0).

    Example:
        >>> round(dp_epsilon(1.1, 0.01, 1000, 1e-5), 2)
        1.71
    """
    import dp_accounting
    from dp_accounting import pld, rdp

    if noise_multiplier < 0 or not 0 < sampling_rate <= 1 or rounds < 0 or not 0 < delta < 1:
        raise ValueError(f"dp_epsilon: need noise_multiplier >= 0, 0 < sampling_rate <= 1, rounds >= 0 and "
                         f"0 < delta < 1; got {noise_multiplier}, {sampling_rate}, {rounds}, {delta}.")
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if accountant == "rdp":
        # RDP composes by adding: ``rounds`` rounds have ``rounds`` times one round's RDP (what the accountant
        # computes for a SelfComposedDpEvent), and one round's, the slow part, is computed once per (z, q).
        orders, one_round = _rdp_of_one_round(noise_multiplier, sampling_rate)
        return float(rdp.rdp_privacy_accountant.compute_epsilon(orders, int(rounds) * one_round, delta)[0])
    if accountant != "pld":
        raise ValueError(f"accountant must be 'rdp' or 'pld', got {accountant!r}.")
    acc = pld.PLDAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(_dp_round_event(noise_multiplier, sampling_rate), int(rounds)))
    return float(acc.get_epsilon(delta))


def _dp_round_event(noise_multiplier: float, sampling_rate: float):
    import dp_accounting

    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, event) if sampling_rate < 1 else event


@functools.lru_cache(maxsize=256)
def _rdp_of_one_round(noise_multiplier: float, sampling_rate: float):
    """The RDP accountant's orders and the RDP of one round of DP-FedAvg at them."""
    from absl import logging as absl_logging
    from dp_accounting import rdp

    acc = rdp.RdpAccountant()
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # RDP warns about orders it skips near alpha = 1: harmless
    try:
        acc.compose(_dp_round_event(noise_multiplier, sampling_rate))
    finally:
        absl_logging.set_verbosity(verbosity)
    return acc._orders, acc._rdp.copy()


def noise_multiplier_for_epsilon(target_epsilon: float, sampling_rate: float, rounds: int,
                                 delta: float = 1e-5) -> float:
    """The smallest noise multiplier whose epsilon (RDP accountant) stays within ``target_epsilon``.

    Uses ``dp_accounting.calibrate_dp_mechanism``.

    Example:
        >>> z = noise_multiplier_for_epsilon(2.0, 0.1, 100)
        >>> dp_epsilon(z, 0.1, 100) <= 2.0 < dp_epsilon(z * 0.95, 0.1, 100)
        True
    """
    import dp_accounting
    from dp_accounting import rdp

    def make_event(z):
        event = dp_accounting.GaussianDpEvent(z)
        if sampling_rate < 1:
            event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
        return dp_accounting.SelfComposedDpEvent(event, int(rounds))

    from absl import logging as absl_logging
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return float(dp_accounting.calibrate_dp_mechanism(rdp.RdpAccountant, make_event, target_epsilon, delta,
                                                          dp_accounting.ExplicitBracketInterval(1e-3, 1e3),
                                                          tol=1e-4))
    finally:
        absl_logging.set_verbosity(verbosity)


def dp_mean(noise_multiplier: float, clip_norm: float, *, total_clients: int | None = None,
            delta: float = 1e-5, accountant: str = "rdp") -> Aggregator:
    """Differentially private mean (DP-FedAvg, McMahan et al. 2018): clip, average, add Gaussian noise.

    Each client's update is clipped to L2 norm ``clip_norm`` (so one client
    changes the *sum* of the updates by at most ``clip_norm``); Gaussian noise
    with standard deviation ``noise_multiplier * clip_norm`` is added to every
    number of that sum, and the server divides it by the number of clients
    ``n``: the *unweighted* mean of the clipped updates, plus noise. The noise
    is drawn from (seed, round). Measurements: ``clipped_fraction``,
    ``mean_update_norm``, ``noise_stddev``, ``sampling_rate`` and ``epsilon``
    (after this round, for ``delta``, from :func:`dp_epsilon` with
    ``q = n / total_clients``; ``q = 1`` when ``total_clients`` is None).

    The accountant assumes each client joins each round independently with
    probability ``q`` (Poisson sampling); sampling a fixed number of clients
    uniformly, as fedteach does, is the usual close approximation.

    Args:
        noise_multiplier: ``z`` >= 0 (0: clipping only, epsilon = inf).
        clip_norm: ``C`` > 0.
        total_clients: size of the population clients are sampled from.
        delta: the delta that ``epsilon`` is reported for.
        accountant: ``'rdp'`` or ``'pld'``.

    Example:
        >>> agg = dp_mean(noise_multiplier=1.0, clip_norm=1.0, total_clients=100)
        >>> updates = [np.zeros((10, 1000))]
        >>> mean, m = agg.aggregate(updates, np.ones(10), RoundContext(1, 0))
        >>> m['sampling_rate'], m['clipped_fraction']
        (0.1, 0.0)
        >>> dp_mean(1.0, 1.0, total_clients=5).aggregate(updates, np.ones(10), RoundContext(1, 0))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: dp_mean: a round has 10 clients but total_clients=5: ...
    """
    if noise_multiplier < 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r} (e.g. 1.0).")
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r} (e.g. 1.0).")
    if total_clients is not None and total_clients < 1:
        raise ValueError(f"total_clients must be >= 1 or None, got {total_clients!r}.")

    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        n = len(weights)
        clipped, norms = _clip(updates, clip_norm)
        std = noise_multiplier * clip_norm / n
        rng = context.rng()
        mean = [(np.mean(c.astype(np.float64), axis=0) + rng.normal(0.0, std, c.shape[1:]) if std > 0
                 else np.mean(c.astype(np.float64), axis=0)).astype(c.dtype) for c in clipped]
        if total_clients is not None and n > total_clients:
            raise ValueError(f"dp_mean: a round has {n} clients but total_clients={total_clients}: the population "
                             "clients are sampled from must be at least as large (give the number of clients "
                             "of the training data), or epsilon would be computed for the wrong sampling rate.")
        q = 1.0 if total_clients is None else n / total_clients
        return mean, {"clipped_fraction": float(np.mean(norms > clip_norm)),
                      "mean_update_norm": float(np.mean(norms)),
                      "noise_stddev": float(std), "sampling_rate": float(q),
                      "epsilon": dp_epsilon(float(noise_multiplier), float(q), int(context.round_num), float(delta),
                                            accountant)}
    names = ("clipped_fraction", "mean_update_norm", "noise_stddev", "sampling_rate", "epsilon")
    return Aggregator(aggregate, needs_clients=True, measurement_names=names,
                      name=f"dp_mean(z={noise_multiplier:g}, clip={clip_norm:g})")


def measurement_type(name: str):
    """The type a measurement has in a round's metrics: int64 for byte counts, else float32.

    Example:
        >>> measurement_type('bytes_sent').__name__, measurement_type('epsilon').__name__
        ('int64', 'float32')
    """
    return np.int64 if name.startswith("bytes") else np.float32


def resolve(aggregator) -> Aggregator:
    """Accepts None (weighted mean), an Aggregator, or a ClientTransform (followed by the weighted mean).

    Example:
        >>> resolve(None).name, resolve(clip(2.0)).name
        ('weighted mean', 'clip(2) -> weighted mean')
    """
    if aggregator is None:
        return weighted_mean()
    if isinstance(aggregator, ClientTransform):
        return chain(aggregator)
    if not isinstance(aggregator, Aggregator):
        raise TypeError(f"aggregator must be an ft.aggregators.Aggregator (e.g. aggregators.dp_mean(1.0, 0.5)), "
                        f"got {type(aggregator).__name__}.")
    return aggregator


def metrics_type_with(metrics_type, aggregator: Aggregator):
    """A round's metrics type with the aggregator's measurements appended (as ``float32@SERVER`` / ``int64``).

    Example:
        >>> from fedteach.federated import StructType, FederatedType, SERVER
        >>> base = StructType([('loss', FederatedType(np.float32, SERVER))])
        >>> print(metrics_type_with(base, compressed_mean(8)))
        <loss=float32@SERVER,bytes_sent=int64@SERVER,bytes_uncompressed=int64@SERVER>
    """
    from fedteach.federated import SERVER, FederatedType, StructType

    names = [n for n in aggregator.measurement_names if n not in metrics_type.names]
    if not names:
        return metrics_type
    return StructType(list(metrics_type.elements) + [(n, FederatedType(measurement_type(n), SERVER))
                                                     for n in names], metrics_type.container)


def client_updates(clients, global_weights, counts, round_num: int, seed: int, aggregator: Aggregator):
    """Runs ``aggregator`` on a round's client models: returns (update, measurements).

    Args:
        clients: the clients' trainable weights, one array ``[clients, ...]`` per variable.
        global_weights: the server's trainable weights (the round's start), one array per variable.
        counts: the clients' example counts; clients with 0 examples are left out.
        round_num: the round (1-based), with ``seed`` the source of randomness.
        aggregator: an :class:`Aggregator`.

    Example:
        >>> update, m = client_updates([np.array([[1.0], [3.0]])], [np.array([1.0])], np.array([1, 1]), 1, 0,
        ...                            unweighted_mean())
        >>> update
        [array([1.])]
    """
    counts = np.asarray(counts)
    keep = counts > 0
    updates = [np.asarray(c)[keep] - np.asarray(g)[None] for c, g in zip(clients, global_weights)]
    update, measurements = aggregator.aggregate(updates, counts[keep].astype(np.float64),
                                                RoundContext(int(round_num), int(seed)))
    return [np.asarray(u, dtype=np.asarray(g).dtype) for u, g in zip(update, global_weights)], measurements
