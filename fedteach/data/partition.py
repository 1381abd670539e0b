"""Partition a central labelled dataset into clients: IID, Dirichlet, shards.

Each partitioner returns `{client_id: sorted example indices}` with ids
'client_000', 'client_001', ...; every example goes to exactly one client.
Feed the result to `ClientData.from_partition(arrays, partition)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Partition = dict[str, np.ndarray]


def partition_iid(num_examples: int, num_clients: int, seed: int = 0) -> Partition:
    """Shuffles the examples and deals them into `num_clients` near-equal parts.

    Sizes differ by at most one.

    Example:
        >>> partition_sizes(partition_iid(10, 3))
        {'client_000': 4, 'client_001': 3, 'client_002': 3}
    """
    _check_clients(num_examples, num_clients)
    order = np.random.default_rng(seed).permutation(num_examples)
    return _named(np.array_split(order, num_clients))


def partition_dirichlet(
    labels: Sequence[int] | np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int = 0,
    min_size: int = 1,
    max_attempts: int = 100,
) -> Partition:
    """Label skew: each label is split among clients in Dirichlet(alpha) proportions.

    Small `alpha` (0.1) gives clients dominated by one or two labels; large
    `alpha` (100) approaches IID (Hsu et al. 2019). As in NIID-Bench (Li et
    al. 2022), a client already holding its fair share takes no more of a
    label, and the draw is repeated until every client has `min_size`
    examples.

    Args:
        labels: one integer label per example.
        num_clients: number of clients.
        alpha: Dirichlet concentration, > 0.
        seed: random seed.
        min_size: the least number of examples of every client.
        max_attempts: draws to try before giving up on `min_size`.

    Raises:
        ValueError: alpha <= 0, too few examples, or `min_size` not reached.

    Example:
        >>> labels = np.repeat(np.arange(10), 100)
        >>> partition = partition_dirichlet(labels, num_clients=5, alpha=0.1)
        >>> sum(partition_sizes(partition).values())
        1000
    """
    labels = np.asarray(labels).reshape(-1)
    _check_clients(len(labels), num_clients)
    if not alpha > 0:
        raise ValueError(
            f'alpha must be > 0, got {alpha}; use e.g. 0.1 (strong label skew) to 100 (near IID).'
        )
    if min_size * num_clients > len(labels):
        raise ValueError(
            f'min_size={min_size} for {num_clients} clients needs {min_size * num_clients} '
            f'examples, but there are {len(labels)}; lower min_size or num_clients.'
        )
    rng = np.random.default_rng(seed)
    fair_share = len(labels) / num_clients
    for _ in range(max_attempts):
        parts = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, np.int64)
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            open_clients = sizes < fair_share
            proportions = rng.dirichlet(np.full(num_clients, alpha)) * open_clients
            if not proportions.sum() > 0:  # Tiny alpha can underflow to all zeros.
                proportions = open_clients.astype(float)
            cuts = np.round(np.cumsum(proportions) / proportions.sum() * len(members))
            for client, chunk in enumerate(np.split(members, cuts[:-1].astype(np.int64))):
                parts[client].append(chunk)
                sizes[client] += len(chunk)
        if sizes.min() >= min_size:
            return _named([np.concatenate(p) for p in parts])
    raise ValueError(
        f'Could not give each of {num_clients} clients at least {min_size} examples in '
        f'{max_attempts} Dirichlet draws with alpha={alpha}; raise alpha, lower min_size '
        'or num_clients, or raise max_attempts.'
    )


def partition_shards(
    labels: Sequence[int] | np.ndarray, num_clients: int, shards_per_client: int = 2, seed: int = 0
) -> Partition:
    """McMahan et al. (2017)'s pathological non-IID split: each client gets a few label-sorted shards.

    The examples are sorted by label (ties in random order), cut into
    `num_clients * shards_per_client` contiguous shards of near-equal size,
    and each client receives `shards_per_client` random shards, so it sees
    only about that many labels.

    Raises:
        ValueError: fewer examples than shards, or shards_per_client < 1.

    Example:
        >>> labels = np.repeat(np.arange(10), 6)
        >>> partition = partition_shards(labels, num_clients=5, shards_per_client=2)
        >>> [len(np.unique(labels[idx])) for idx in partition.values()]
        [2, 2, 2, 2, 2]
    """
    labels = np.asarray(labels).reshape(-1)
    if shards_per_client < 1:
        raise ValueError(f'shards_per_client must be >= 1, got {shards_per_client}.')
    _check_clients(len(labels), num_clients)
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f'{num_clients} clients x {shards_per_client} shards = {num_shards} shards, but '
            f'there are only {len(labels)} examples; use fewer clients or shards.'
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind='stable')]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return _named([np.concatenate([shards[s] for s in row]) for row in dealt])


def partition_sizes(partition: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Number of examples per client of a partition.

    Example:
        >>> partition_sizes({'a': np.array([0, 3]), 'b': np.array([1])})
        {'a': 2, 'b': 1}
    """
    return {client_id: len(indices) for client_id, indices in partition.items()}


def _check_clients(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
    if num_clients > num_examples:
        raise ValueError(
            f'Cannot split {num_examples} examples among {num_clients} clients: every client '
            'needs at least one example. Use fewer clients.'
        )


def _named(parts: list[np.ndarray]) -> Partition:
    width = max(3, len(str(len(parts) - 1)))
    return {f'client_{i:0{width}d}': np.sort(p).astype(np.int64) for i, p in enumerate(parts)}
