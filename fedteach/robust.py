"""Robust aggregators: reductions that a few malicious clients cannot steer.

The mean of the clients' updates follows any single client as far as it
likes: one client that sends ``-100 Δ`` moves it by ``-100 Δ / n``. A robust
aggregator bounds that influence:

========================  ======================================================
``median()``              coordinate-wise median (Yin et al. 2018)
``trimmed_mean(beta)``    per coordinate, drop the ``beta n`` largest and the
                          ``beta n`` smallest values, average the rest (Yin et al. 2018)
``krum(f)``               the one update closest to its ``n - f - 2`` nearest
                          neighbours (Blanchard et al. 2017)
``multi_krum(f, m)``      the mean of the ``m`` updates with the best Krum scores
``norm_bound(C)``         clip each update to L2 norm ``C``, then the weighted
                          mean (Sun et al. 2019)
========================  ======================================================

Each is an :class:`~fedteach.aggregators.Aggregator`, so it ends a
:func:`~fedteach.aggregators.chain` after client transforms (an attack from
:mod:`fedteach.attacks`, ``clip``, ``quantize``) and goes wherever an
``aggregator=`` is accepted. Each reports in the round's metrics what it left
out: ``trimmed_fraction`` (the share of the values of each coordinate not
used), ``discarded_clients`` and ``selected_client`` (Krum: the index of the
chosen client in the round's order, counting clients with examples),
``clipped_fraction``. The median, the trimmed mean and (Multi-)Krum ignore
the clients' example counts: a weight is something a malicious client could
lie about.

They assume that honest updates agree. When clients hold different labels
(non-IID data), honest updates differ too, and a robust aggregator throws
away honest information with the malicious: Krum, which keeps one client's
update, learns more slowly even without any attack. ``tools/attack_table.py``
measures both effects on the offline digits.

Example:
    >>> import numpy as np
    >>> from fedteach.aggregators import RoundContext
    >>> updates = [np.array([[1.0], [1.2], [0.9], [-50.0]])]   # 4 clients, the last one malicious
    >>> median().aggregate(updates, np.ones(4), RoundContext(1, 0))[0]
    [array([0.95])]
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from fedteach.aggregators import Aggregator, _check_updates, chain, clip, weighted_mean

__all__ = ["krum", "krum_scores", "median", "multi_krum", "norm_bound", "trimmed_mean"]


def _flat(updates) -> np.ndarray:
    """The clients' updates as one float64 row per client (all variables concatenated)."""
    return np.concatenate([u.astype(np.float64).reshape(len(u), -1) for u in updates], axis=1)


def _check_some(weights, name: str) -> int:
    if len(weights) == 0:
        raise ValueError(f"{name}: the round has no clients with examples; sample at least one client with "
                         "examples per round.")
    return len(weights)


def median() -> Aggregator:
    """The coordinate-wise median of the clients' updates (Yin et al. 2018).

    Every number of the model is set to the median of that number over the
    round's clients (with an even number of clients, the mean of the two
    middle values), so fewer than half of the clients cannot drag any number
    outside the range of the honest clients' values. Example counts are
    ignored. Measurement: ``trimmed_fraction``, the share of each
    coordinate's values not used (``(n - 1) / n`` for odd ``n``,
    ``(n - 2) / n`` for even ``n``).

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> updates = [np.array([[1.0, 0.0], [2.0, 5.0], [100.0, 1.0]])]
        >>> update, m = median().aggregate(updates, np.ones(3), RoundContext(1, 0))
        >>> update[0].tolist(), round(m['trimmed_fraction'], 3)
        ([2.0, 1.0], 0.667)
    """
    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        n = _check_some(weights, "median")
        used = 1 if n % 2 else 2
        return ([np.median(u.astype(np.float64), axis=0).astype(u.dtype) for u in updates],
                {"trimmed_fraction": (n - used) / n})
    return Aggregator(aggregate, needs_clients=True, measurement_names=("trimmed_fraction",), name="median")


def trimmed_mean(beta: float) -> Aggregator:
    """The coordinate-wise trimmed mean (Yin et al. 2018): drop the extremes of each number, average the rest.

    With ``n`` clients and ``k = floor(beta * n)``, each number of the
    update is the mean of its ``n - 2k`` middle values over the clients: the
    ``k`` largest and the ``k`` smallest are dropped. It withstands up to
    ``k`` malicious clients; with ``k = 0`` (``beta * n < 1``) it is the plain
    mean. Example counts are ignored. Measurement: ``trimmed_fraction`` =
    ``2k / n``.

    Args:
        beta: the fraction trimmed from each side, ``0 <= beta < 0.5``.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> updates = [np.array([[1.0], [2.0], [3.0], [4.0], [-90.0]])]
        >>> update, m = trimmed_mean(0.2).aggregate(updates, np.ones(5), RoundContext(1, 0))
        >>> update[0].tolist(), m['trimmed_fraction']
        ([2.0], 0.4)
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 0.5:
        raise ValueError(f"trimmed_mean: beta must be a number from 0 to below 0.5 (the fraction trimmed from "
                         f"each side), got {beta!r}; e.g. trimmed_mean(0.2) with 10 clients drops 2 + 2.")

    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        n = _check_some(weights, f"trimmed_mean({beta:g})")
        k = math.floor(beta * n + 1e-9)   # the tolerance keeps e.g. 0.3 * 10 at 3, not 2.9999...; 2k < n
        trimmed = [np.sort(u.astype(np.float64), axis=0)[k:n - k].mean(axis=0).astype(u.dtype) for u in updates]
        return trimmed, {"trimmed_fraction": 2 * k / n}
    return Aggregator(aggregate, needs_clients=True, measurement_names=("trimmed_fraction",),
                      name=f"trimmed_mean({beta:g})")


def _check_f(f, name: str) -> int:
    if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 0:
        raise ValueError(f"{name}: f, the number of malicious clients to tolerate, must be an integer >= 0, "
                         f"got {f!r}; e.g. f=3 when 30% of 10 clients per round may be malicious.")
    return int(f)


def krum_scores(updates, f: int) -> np.ndarray:
    """Krum's score of each client: the sum of squared distances to its ``n - f - 2`` closest other updates.

    Blanchard et al. (2017): an honest update has honest neighbours close by,
    so its score is small; an outlier is far from everyone. ``updates`` are
    arrays ``[clients, ...]`` (one per variable), taken together as one
    vector per client.

    Raises:
        ValueError: ``n <= 2f + 2``: Krum is defined for ``n > 2f + 2``.

    Example:
        >>> updates = [np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])]
        >>> krum_scores(updates, f=1).tolist()   # 5 - 1 - 2 = 2 neighbours each
        [5.0, 2.0, 5.0, 65.0, 82.0]
    """
    f = _check_f(f, "krum")
    flat = _flat([np.asarray(u) for u in updates])
    n = len(flat)
    if n <= 2 * f + 2:
        raise ValueError(f"krum(f={f}) needs more than 2f + 2 = {2 * f + 2} clients in a round, and this round "
                         f"had {n}: sample at least {2 * f + 3} clients per round, or lower f to at most "
                         f"{max((n - 3) // 2, 0)}." if n >= 3 else
                         f"krum needs at least 3 clients in a round, and this round had {n}: sample at least "
                         f"{2 * f + 3} clients per round.")
    squared = np.square(flat).sum(axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * flat @ flat.T, 0.0)
    np.fill_diagonal(distances, np.inf)   # a client is not its own neighbour
    closest = np.sort(distances, axis=1)[:, :n - f - 2]
    return closest.sum(axis=1)


def krum(f: int) -> Aggregator:
    """Krum (Blanchard et al. 2017): the one client update with the smallest Krum score.

    The score of a client is the sum of squared distances from its update to
    the ``n - f - 2`` closest other updates (:func:`krum_scores`); the round's
    update is the update of the client with the lowest score (the first, on
    a tie). It tolerates ``f`` malicious clients among ``n > 2f + 2``.
    Measurements: ``selected_client`` (the chosen client's index in the
    round's order) and ``discarded_clients`` (``n - 1``).

    Args:
        f: the number of malicious clients per round to tolerate.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> updates = [np.array([[1.0, 1.0], [1.1, 0.9], [0.9, 1.0], [1.0, 1.1], [-9.0, 9.0]])]
        >>> update, m = krum(1).aggregate(updates, np.ones(5), RoundContext(1, 0))
        >>> update[0].tolist(), m
        ([1.0, 1.0], {'selected_client': 0, 'discarded_clients': 4})
    """
    f = _check_f(f, "krum")

    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        best = int(np.argmin(krum_scores(updates, f)))
        return [u[best].copy() for u in updates], {"selected_client": best, "discarded_clients": len(weights) - 1}
    return Aggregator(aggregate, needs_clients=True, measurement_names=("selected_client", "discarded_clients"),
                      name=f"krum(f={f})")


def multi_krum(f: int, m: int) -> Aggregator:
    """Multi-Krum (Blanchard et al. 2017): the plain mean of the ``m`` updates with the lowest Krum scores.

    ``m = 1`` is :func:`krum`; ``m = n`` the unweighted mean; the paper's
    experiments use ``m = n - f``. Measurement: ``discarded_clients``
    (``n - m``).

    Args:
        f: the number of malicious clients per round to tolerate (``n > 2f + 2``).
        m: how many updates to average, ``1 <= m <= n``.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> updates = [np.array([[1.0], [2.0], [3.0], [4.5], [90.0]])]
        >>> update, meas = multi_krum(f=1, m=3).aggregate(updates, np.ones(5), RoundContext(1, 0))
        >>> update[0].tolist(), meas
        ([2.0], {'discarded_clients': 2})
    """
    f = _check_f(f, "multi_krum")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
        raise ValueError(f"multi_krum: m, the number of updates averaged, must be an integer >= 1, got {m!r}; "
                         "e.g. m = clients per round - f.")

    def aggregate(updates, weights, context):
        updates, weights = _check_updates(updates, weights)
        n = len(weights)
        if m > n:
            raise ValueError(f"multi_krum(f={f}, m={m}) averages {m} updates, but the round had only {n} clients: "
                             f"lower m to at most {n} (e.g. {max(n - f, 1)} = clients - f) or sample more clients.")
        chosen = np.sort(np.argsort(krum_scores(updates, f), kind="stable")[:m])
        return ([u[chosen].astype(np.float64).mean(axis=0).astype(u.dtype) for u in updates],
                {"discarded_clients": n - m})
    return Aggregator(aggregate, needs_clients=True, measurement_names=("discarded_clients",),
                      name=f"multi_krum(f={f}, m={m})")


def norm_bound(clip_norm: float) -> Aggregator:
    """Norm bounding (Sun et al. 2019): each update scaled to L2 norm at most ``clip_norm``, then the weighted mean.

    This is ``chain(clip(clip_norm), weighted_mean())`` under its name from
    the backdoor literature: it reuses :func:`fedteach.aggregators.clip`
    (the norm of all variables together), so a boosted update (model
    replacement) counts no more than an honest one of norm ``clip_norm``.
    To combine the bound with another reduction, chain ``clip`` itself, e.g.
    ``chain(clip(1.0), median())``. Measurements: ``clipped_fraction`` (the
    clients scaled down) and ``mean_update_norm`` (before clipping: choose
    ``clip_norm`` near the honest clients' norms).

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> updates = [np.array([[0.3, 0.4], [30.0, 40.0]])]   # norms 0.5 and 50
        >>> update, m = norm_bound(1.0).aggregate(updates, np.ones(2), RoundContext(1, 0))
        >>> update[0].round(6).tolist(), m['clipped_fraction']
        ([0.45, 0.6], 0.5)
    """
    bounded = chain(clip(clip_norm), weighted_mean())
    return bounded._replace(name=f"norm_bound({clip_norm:g})")
