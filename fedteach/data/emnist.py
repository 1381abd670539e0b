"""Federated EMNIST, from the public files TensorFlow Federated uses.

The archives are downloaded once into a cache directory (default
`~/.cache/fedteach`, or `$FEDTEACH_CACHE`), verified by SHA-256, extracted,
and read lazily from HDF5.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tarfile

from fedteach.data.client_data import ClientData
from fedteach.data.download import fetch, file_lock, sha256_of
from fedteach.data.synthetic import archive_prefix

BASE_URL = 'https://storage.googleapis.com/tff-datasets-public/'
SHA256 = {
    True: '55333deb8546765427c385710ca5e7301e16f4ed8b60c1dc5ae224b42bd5b14b',
    False: 'fe1ed5a502cea3a952eb105920bff8cffb32836b5173cb18a57a32c3606f3ea0',
}
OFFLINE_HINT = (
    'Without network, use the bundled offline dataset: ft.load_offline_digits(), or '
    'ft.load_course_data(), which uses federated EMNIST when cached and the offline '
    "digits otherwise. If you have TFF's files, pass load_emnist(path=DIR) with a "
    'directory holding {archive} or its extracted .h5 files.'
)


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache directory: `cache_dir`, else `$FEDTEACH_CACHE`, else `~/.cache/fedteach`.

    Example:
        >>> resolve_cache_dir('/tmp/my_cache')
        PosixPath('/tmp/my_cache')
    """
    if cache_dir is None:
        cache_dir = os.environ.get('FEDTEACH_CACHE') or pathlib.Path.home() / '.cache' / 'fedteach'
    return pathlib.Path(cache_dir).expanduser()


def is_emnist_cached(only_digits: bool = True, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether `load_emnist` would load from the cache without any network access.

    Example:
        >>> import tempfile
        >>> is_emnist_cached(cache_dir=tempfile.mkdtemp())
        False
    """
    return _has_h5(resolve_cache_dir(cache_dir), archive_prefix(only_digits))


def load_emnist(
    only_digits: bool = True,
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str = BASE_URL,
    path: str | os.PathLike | None = None,
    timeout: float = 10.0,
    verbose: bool = True,
    _sha256: str | None = None,
) -> tuple[ClientData, ClientData]:
    """Loads federated EMNIST (Caldas et al. 2018, LEAF) as TFF publishes it.

    `only_digits=True` gives 3,383 writers with 341,873 train and 40,832
    test examples of the 10 digits; `only_digits=False` gives 3,400 writers
    and 62 classes (digits, upper and lower case letters). Each example is
    `{'label': int32[], 'pixels': float32[28, 28]}`, with 1.0 the background
    and 0.0 ink. The archive is downloaded once, verified by SHA-256 and
    extracted into the cache; later calls need no network.

    Args:
        only_digits: the digits-only version (True) or all 62 classes.
        cache_dir: where to keep the files; default `$FEDTEACH_CACHE` or
            `~/.cache/fedteach`.
        base_url: where the archives are served.
        path: a local directory holding `fed_emnist_digitsonly.tar.bz2` (or
            `fed_emnist.tar.bz2`) or the extracted `.h5` files; then nothing is
            downloaded and the archive is extracted next to itself.
        timeout: network timeout in seconds (to connect and for each read).
        verbose: print a line when downloading or extracting.
        _sha256: expected checksum, only for tests with other archives.

    Returns:
        `(train, test)` `ClientData`, with the same writers in both.

    Raises:
        DownloadError: no network, a truncated or a corrupt download (the
            message names the offline alternatives).
        FileNotFoundError: `path` holds neither the archive nor the .h5 files.
        ValueError: a local archive with the wrong checksum or content.

    Example:
        >>> import tempfile, pathlib
        >>> from fedteach.data.synthetic import make_emnist_like_clients, write_emnist_archive
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> clients = make_emnist_like_clients(3, 5)
        >>> archive = write_emnist_archive(
        ...     folder / 'fed_emnist_digitsonly.tar.bz2', clients, clients)
        >>> train, test = load_emnist(path=folder, _sha256=sha256_of(archive), verbose=False)
        >>> len(train), train.element_spec['pixels']
        (3, TensorSpec(shape=(28, 28), dtype=tf.float32, name=None))
    """
    prefix = archive_prefix(only_digits)
    sha256 = _sha256 or SHA256[only_digits]
    archive_name = f'{prefix}.tar.bz2'
    if path is not None:
        directory = pathlib.Path(path).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(
                f'load_emnist(path={str(path)!r}): expected a directory holding '
                f'{archive_name} or {prefix}_train.h5 and {prefix}_test.h5.'
            )
    else:
        directory = resolve_cache_dir(cache_dir)
        directory.mkdir(parents=True, exist_ok=True)
    with file_lock(directory / f'{prefix}.lock'):
        if not _has_h5(directory, prefix):
            archive = directory / archive_name
            if path is not None:
                _check_local_archive(archive, sha256, prefix)
            else:
                url = base_url.rstrip('/') + '/' + archive_name
                message = f'Downloading {url} into {directory} (only the first time).'
                fetch(
                    url,
                    archive,
                    sha256,
                    timeout=timeout,
                    hint=OFFLINE_HINT.format(archive=archive_name),
                    on_start=(lambda: print(message)) if verbose else None,
                )
            if verbose:
                print(f'Extracting {archive} ...')
            _extract(archive, directory, prefix)
    return (
        ClientData.from_h5(directory / f'{prefix}_train.h5'),
        ClientData.from_h5(directory / f'{prefix}_test.h5'),
    )


def _has_h5(directory: pathlib.Path, prefix: str) -> bool:
    return all((directory / f'{prefix}_{split}.h5').is_file() for split in ('train', 'test'))


def _check_local_archive(archive: pathlib.Path, sha256: str, prefix: str) -> None:
    if not archive.is_file():
        raise FileNotFoundError(
            f'{archive.parent} holds neither {archive.name} nor {prefix}_train.h5 and '
            f'{prefix}_test.h5. Put the archive (or the extracted files) there, or call '
            'load_emnist() without path= to download it.'
        )
    actual = sha256_of(archive)
    if actual != sha256:
        raise ValueError(
            f'{archive} has sha256 {actual}, expected {sha256}: the file is corrupt or '
            "not TFF's federated EMNIST. Delete it and download it again."
        )


def _extract(archive: pathlib.Path, directory: pathlib.Path, prefix: str) -> None:
    """Extracts the train and test .h5 files, each atomically (one pass over the archive)."""
    wanted = {f'{prefix}_{split}.h5' for split in ('train', 'test')}
    with tarfile.open(archive, 'r:bz2') as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                partial = directory / f'{member.name}.extracting'
                with tar.extractfile(member) as source, open(partial, 'wb') as target:
                    shutil.copyfileobj(source, target, 1 << 20)
                os.replace(partial, directory / member.name)
                wanted.discard(member.name)
    if wanted:
        raise ValueError(
            f'{archive} does not contain {sorted(wanted)}: it is not '
            "TFF's federated EMNIST archive."
        )
