"""Rounds in bounded memory: the fast engine runs a large round's clients in groups.

The fast engine holds a round's examples twice (stacked, then mapped by the
preprocessing) and one copy of the model per client. For the tutorial's
rounds that is a few megabytes; for a round of every writer of federated
EMNIST (3,383 clients, 341,873 examples) it is several gigabytes. When a
round's estimate exceeds the memory budget, its clients are split into
consecutive groups that each fit, and each group is trained by the same
compiled function: every group is padded to one shape (the same number of
clients, rows, steps and batch size), so the split costs no compilation.
Clients are grouped by size (see :func:`plan`), so a group's loop runs few
padded steps. The groups' example-weighted averages are combined by their
shares of the round's examples, which gives the average of one big group to
float tolerance. Shuffling draws from the round's generator client by
client, in order, as without groups, so every client trains on the same
batches.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from fedteach.data.client_data import release_mapped_pages
from fedteach.rounds import fast

DEFAULT_MEMORY_BUDGET_MB = 256.0
"""The default memory a fast round's data and client models may take (the process's baseline aside)."""

COPIES_PER_CLIENT = 5
"""Copies of the trainable weights the compiled round keeps per client (weights, new weights, gradients, the
returned clients, a temporary)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a round is split: groups of clients (indices into the round's list), each padded to ``clients``
    clients and ``rows`` rows of examples."""

    groups: tuple            # one array of client indices per group
    clients: int             # clients per group after padding
    rows: int                # rows of stacked examples per group after padding


def plan(sizes, row_bytes: int, client_bytes: int, budget_bytes: float) -> Plan | None:
    """Splits clients with ``sizes`` examples into groups that fit ``budget_bytes``; None when all fit at once.

    Clients are grouped by size, smallest first, in groups of one size: a group's compiled loop runs as many
    steps as its largest client needs, so clients of similar sizes waste few padded steps. The group size is the
    largest whose group of the largest clients fits the budget (its rows padded to a power of two, which every
    group then shares). Training is per client, so the grouping does not change what a client computes.

    Example:
        >>> p = plan([120, 30, 100, 60], row_bytes=1000, client_bytes=1000, budget_bytes=300_000)
        >>> [g.tolist() for g in p.groups], p.clients, p.rows
        ([[1, 3], [2, 0]], 2, 256)
        >>> plan([10, 10], row_bytes=1000, client_bytes=1000, budget_bytes=1e6) is None
        True
    """
    sizes = np.asarray(sizes, np.int64)
    if int(sizes.sum()) * row_bytes + len(sizes) * client_bytes <= budget_bytes:
        return None
    order = np.argsort(sizes, kind="stable")
    largest_first = np.cumsum(sizes[order][::-1])  # rows of the g largest clients, g = 1, 2, ...
    rows = np.array([fast.bucket(int(r)) for r in largest_first])
    fits = rows * row_bytes + np.arange(1, len(sizes) + 1) * client_bytes <= budget_bytes
    clients = int(np.argmin(fits)) if not fits.all() else len(sizes)  # fits is True, then False
    clients = max(clients, 1)
    groups = tuple(order[i:i + clients] for i in range(0, len(sizes), clients))
    return Plan(groups, clients, int(rows[clients - 1]))


def estimate(layouter, trainer, datasets, steps: int) -> tuple[int, int]:
    """Bytes per example row (raw and mapped) and per client (model copies, index and mask) of a fast round."""
    raw = sum(a.dtype.itemsize * math.prod(a.shape[1:]) for a in datasets[0].source.values())
    mapped = layouter.row_bytes
    params = trainer.weight_bytes
    batch = max((s.args[0] for ds in datasets for s in ds.steps if s.kind == "batch"), default=1)
    return raw + mapped, COPIES_PER_CLIENT * params + steps * batch * 8


def train(trainer, layouter, datasets, rng, trainable, non_trainable, return_clients: bool,
          budget_bytes: float, corrections: list | None = None) -> tuple[fast.Trained, np.ndarray, np.ndarray]:
    """Trains a round's clients on the fast engine, in groups if the round exceeds ``budget_bytes``.

    ``corrections`` (SCAFFOLD's ``c - c_i``, one array ``[clients, ...]`` per
    trainable variable) is sliced group by group. Returns what
    :meth:`fast.FastTrainer.train` returns for all the clients at once, the
    clients' numbers of examples and their numbers of local steps.
    """
    sizes = [fast._num_rows(ds) for ds in datasets]
    row_bytes, client_bytes = estimate(layouter, trainer, datasets, fast.MIN_STEPS)
    split = plan(sizes, row_bytes, client_bytes, budget_bytes)
    if split is None:
        layout = layouter.layout(datasets, rng)
        trained = trainer.train(trainable, non_trainable, layout, return_clients, corrections=corrections)
        return trained, layout.num_examples, layout.local_steps
    streams = [fast._client_stream(ds, rng) for ds in datasets]  # the generator's draws in client order, as above
    steps = fast.bucket(max(len(lengths) for _, lengths in streams), fast.MIN_STEPS)
    batch = max((int(lengths.max()) for _, lengths in streams if len(lengths)), default=1)
    shape = (split.clients, steps, batch)
    group_layouter = fast.Layouter(layouter.input_spec, layouter.num_classes, min_rows=split.rows)
    num_examples, local_steps = np.zeros(len(datasets), np.int64), np.zeros(len(datasets), np.int64)
    outputs = [None] * len(datasets)
    clients = [np.repeat(np.asarray(w)[None], len(datasets), 0) for w in trainable] if return_clients else None
    tv = [np.zeros_like(w, np.float64) for w in trainable]
    ntv = [np.zeros_like(w, np.float64) for w in non_trainable]
    lows, highs = [], []
    for members in split.groups:
        group = [datasets[i] for i in members]
        examples, map_fns, offsets = group_layouter._stack(group)
        index, mask = fast._index([streams[i] for i in members], offsets)
        index, mask = _padded(index, shape), _padded(mask, shape)
        count = mask.sum(axis=(1, 2)).astype(np.int64)
        num_examples[members] = count[:len(members)]
        local_steps[members] = [len(streams[i][1]) for i in members]
        if count.sum() == 0:  # nothing to train: the group adds nothing to the average
            continue
        layout = fast.Layout(examples, map_fns, int(sum(sizes[i] for i in members)), index, mask, count,
                             _padded(local_steps[members], (split.clients,)))
        group_corrections = None if corrections is None else [
            _padded(np.asarray(c)[members], (split.clients,) + np.shape(c)[1:]) for c in corrections]
        trained = trainer.train(trainable, non_trainable, layout, return_clients, corrections=group_corrections)
        release_mapped_pages(a for ds in group for a in ds.source.values())
        del examples, layout
        weight = float(count.sum())  # the group's average, weighted by its examples
        tv = [t + weight * w for t, w in zip(tv, trained.trainable)]
        ntv = [t + weight * w for t, w in zip(ntv, trained.non_trainable)]
        for i, out in zip(members, trained.outputs):
            outputs[i] = out
        if return_clients:
            for all_clients, group_clients in zip(clients, trained.clients):
                all_clients[members] = group_clients[:len(members)]
        lows.append(trained.label_range[0])
        highs.append(trained.label_range[1])
    total = max(float(num_examples.sum()), 1.0)
    tv = [(t / total).astype(np.asarray(w).dtype) for t, w in zip(tv, trainable)]
    ntv = [(t / total).astype(np.asarray(w).dtype) for t, w in zip(ntv, non_trainable)]
    label_range = (min(lows), max(highs)) if lows else (0, 0)
    return fast.Trained(tv, ntv, outputs, clients, label_range), num_examples, local_steps


def _padded(array: np.ndarray, shape) -> np.ndarray:
    """``array`` padded with zeros to ``shape`` (more clients, or more steps and batch rows)."""
    out = np.zeros(shape, array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out
