"""Exploration helpers: how much data each client has and which labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedteach.data.client_data import ClientData


def client_sizes(client_data: ClientData, client_ids: Sequence[str] | None = None) -> dict[str, int]:
    """Number of examples per client (all clients by default).

    Example:
        >>> cd = ClientData.from_arrays({'a': {'y': np.zeros(3)}, 'b': {'y': np.zeros(1)}})
        >>> client_sizes(cd)
        {'a': 3, 'b': 1}
    """
    ids = client_data.client_ids if client_ids is None else client_ids
    return {c: client_data.num_examples(c) for c in ids}


def label_histogram(
    client_data: ClientData, client_id: str, num_classes: int = 10, *, label_key: str = 'label'
) -> np.ndarray:
    """Counts of each label 0..num_classes-1 in one client's raw data.

    Raises:
        ValueError: a label outside [0, num_classes) or no `label_key` field.

    Example:
        >>> cd = ClientData.from_arrays({'a': {'label': np.array([0, 2, 2])}})
        >>> label_histogram(cd, 'a', num_classes=4)
        array([1, 0, 2, 0])
    """
    arrays = client_data.client_arrays(client_id)
    if label_key not in arrays:
        raise ValueError(
            f'Client {client_id!r} has no field {label_key!r} (fields: {sorted(arrays)}); '
            'pass label_key= with the name of the label field.'
        )
    labels = np.asarray(arrays[label_key]).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f'Client {client_id!r} has labels in [{labels.min()}, {labels.max()}], outside '
            f'[0, {num_classes}); pass num_classes={int(labels.max()) + 1} or more '
            '(62 for full EMNIST).'
        )
    return np.bincount(labels.astype(np.int64), minlength=num_classes)


def label_matrix(
    client_data: ClientData,
    client_ids: Sequence[str] | None = None,
    num_classes: int = 10,
    *,
    label_key: str = 'label',
) -> np.ndarray:
    """Label counts per client: an int array [clients, classes], rows in `client_ids` order.

    Plotted as a heatmap it shows at a glance how non-IID clients are.

    Example:
        >>> cd = ClientData.from_arrays({'a': {'label': np.array([0, 0])},
        ...                              'b': {'label': np.array([1])}})
        >>> label_matrix(cd, num_classes=2)
        array([[2, 0],
               [0, 1]])
    """
    ids = client_data.client_ids if client_ids is None else client_ids
    rows = [label_histogram(client_data, c, num_classes, label_key=label_key) for c in ids]
    return np.stack(rows) if rows else np.zeros((0, num_classes), np.int64)


def summarize(client_data: ClientData) -> dict[str, float]:
    """Number of clients and examples, and the min/median/max examples per client.

    Example:
        >>> cd = ClientData.from_arrays({c: {'y': np.zeros(n)} for c, n in [('a', 1), ('b', 4), ('c', 6)]})
        >>> summarize(cd)
        {'clients': 3, 'examples': 11, 'min': 1, 'median': 4.0, 'max': 6}
    """
    sizes = np.array(list(client_sizes(client_data).values()))
    return {
        'clients': len(sizes),
        'examples': int(sizes.sum()),
        'min': int(sizes.min()),
        'median': float(np.median(sizes)),
        'max': int(sizes.max()),
    }
