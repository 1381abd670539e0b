"""Synthetic EMNIST-like clients and writers of TFF's federated EMNIST files.

Used by tests and benchmarks to produce files in exactly the format that
`load_emnist` downloads: HDF5 `examples/<client_id>/{label, pixels}` with
`label` int32 [n] and `pixels` float32 [n, 28, 28] (1.0 = background,
0.0 = ink), packed as `fed_emnist_digitsonly.tar.bz2` (or `fed_emnist.tar.bz2`).
"""

from __future__ import annotations

import os
import pathlib
import tarfile
import tempfile
from collections.abc import Mapping, Sequence

import h5py
import numpy as np

_TEMPLATE_SEED = 20170217  # The templates are the same for every `seed`.


def archive_prefix(only_digits: bool) -> str:
    """The file name prefix TFF uses for federated EMNIST.

    Example:
        >>> archive_prefix(True), archive_prefix(False)
        ('fed_emnist_digitsonly', 'fed_emnist')
    """
    return 'fed_emnist_digitsonly' if only_digits else 'fed_emnist'


def make_emnist_like_clients(
    num_clients: int,
    examples_per_client: int | Sequence[int],
    seed: int = 0,
    *,
    num_classes: int = 10,
    noise: float = 0.1,
) -> dict[str, dict[str, np.ndarray]]:
    """Random but learnable clients shaped like federated EMNIST.

    Each label has a fixed blocky 28x28 template (identical for every seed, so
    train and test clients made with different seeds agree); an example is its
    label's template with random ink intensity and Gaussian noise. Labels are
    uniform. Pixels follow EMNIST's polarity: 1.0 background, 0.0 ink.

    Args:
        num_clients: number of clients, named 'f0000_00', 'f0001_00', ...
        examples_per_client: one size for all clients or one size per client.
        seed: seed of labels and noise.
        num_classes: number of labels (10 digits; 62 for full EMNIST).
        noise: standard deviation of the pixel noise.

    Returns:
        client id -> {'label': int32 [n], 'pixels': float32 [n, 28, 28]}.

    Example:
        >>> clients = make_emnist_like_clients(2, [3, 1], seed=0)
        >>> {cid: c['pixels'].shape for cid, c in clients.items()}
        {'f0000_00': (3, 28, 28), 'f0001_00': (1, 28, 28)}
    """
    sizes = np.broadcast_to(np.asarray(examples_per_client, dtype=np.int64), (num_clients,))
    if num_clients < 1 or (sizes < 0).any():
        raise ValueError(
            f'Need num_clients >= 1 and examples_per_client >= 0, got {num_clients} '
            f'and {examples_per_client}.'
        )
    blocks = np.random.default_rng(_TEMPLATE_SEED).random((num_classes, 7, 7)) < 0.35
    templates = np.kron(blocks, np.ones((4, 4))).astype(np.float32)
    rng = np.random.default_rng(seed)
    clients = {}
    for i, size in enumerate(sizes):
        labels = rng.integers(num_classes, size=size).astype(np.int32)
        intensity = rng.uniform(0.7, 1.0, size=(size, 1, 1)).astype(np.float32)
        ink = templates[labels] * intensity
        ink += rng.normal(0.0, noise, size=ink.shape).astype(np.float32)
        clients[f'f{i:04d}_00'] = {'label': labels, 'pixels': np.clip(1.0 - ink, 0.0, 1.0)}
    return clients


def write_emnist_h5(
    path: str | os.PathLike, clients: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Writes clients to an HDF5 file in TFF's federated EMNIST layout.

    Args:
        path: the .h5 file to (over)write.
        clients: client id -> {'label': [n] ints, 'pixels': [n, 28, 28] floats};
            stored as int32 and float32.

    Raises:
        ValueError: a client lacks `label` or `pixels` or has wrong shapes.

    Example:
        >>> import tempfile, pathlib, h5py
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'train.h5'
        >>> write_emnist_h5(path, make_emnist_like_clients(1, 2))
        >>> with h5py.File(path) as f:
        ...     f['examples/f0000_00/pixels'].dtype.name, f['examples/f0000_00/label'].shape
        ('float32', (2,))
    """
    with h5py.File(path, 'w') as h5:
        examples = h5.create_group('examples')
        for client_id, fields in clients.items():
            if set(fields) != {'label', 'pixels'}:
                raise ValueError(
                    f"Client {client_id!r} has fields {sorted(fields)}; federated EMNIST "
                    "needs exactly 'label' and 'pixels'."
                )
            labels = np.asarray(fields['label'], np.int32)
            pixels = np.asarray(fields['pixels'], np.float32)
            if pixels.shape[1:] != (28, 28) or labels.shape != pixels.shape[:1]:
                raise ValueError(
                    f'Client {client_id!r}: expected label [n] and pixels [n, 28, 28], got '
                    f'label {labels.shape} and pixels {pixels.shape}.'
                )
            group = examples.create_group(client_id)
            group.create_dataset('label', data=labels)
            group.create_dataset('pixels', data=pixels)


def write_emnist_archive(
    path: str | os.PathLike,
    train_clients: Mapping[str, Mapping[str, np.ndarray]],
    test_clients: Mapping[str, Mapping[str, np.ndarray]],
    only_digits: bool = True,
) -> pathlib.Path:
    """Writes a `.tar.bz2` archive exactly like TFF's federated EMNIST files.

    The archive holds `fed_emnist_digitsonly_train.h5` and
    `fed_emnist_digitsonly_test.h5` (or `fed_emnist_train.h5` and
    `fed_emnist_test.h5` when `only_digits=False`) at its top level. Name the
    archive `fed_emnist_digitsonly.tar.bz2` / `fed_emnist.tar.bz2` for
    `load_emnist(path=...)` to find it.

    Args:
        path: the archive file to write.
        train_clients: the train clients, as for `write_emnist_h5`.
        test_clients: the test clients.
        only_digits: which of TFF's two archives to imitate.

    Returns:
        `path` as a `pathlib.Path`.

    Example:
        >>> import tempfile, pathlib, tarfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'fed_emnist_digitsonly.tar.bz2'
        >>> clients = make_emnist_like_clients(2, 3)
        >>> tarfile.open(write_emnist_archive(path, clients, clients)).getnames()
        ['fed_emnist_digitsonly_train.h5', 'fed_emnist_digitsonly_test.h5']
    """
    path = pathlib.Path(path)
    prefix = archive_prefix(only_digits)
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(path, 'w:bz2') as tar:
        for split, clients in (('train', train_clients), ('test', test_clients)):
            h5_path = pathlib.Path(tmp) / f'{prefix}_{split}.h5'
            write_emnist_h5(h5_path, clients)
            tar.add(h5_path, arcname=h5_path.name)
    return path
