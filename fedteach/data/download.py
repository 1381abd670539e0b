"""A small, safe downloader: checksum-verified, resumable, atomic, locked.

A file is streamed to `<name>.part` while hashing it; an interrupted
download is resumed with an HTTP Range request when the server supports it.
Only a file whose SHA-256 matches is renamed (atomically) to its final name,
so a partial or corrupt download is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pathlib
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent loads are not protected.
    fcntl = None

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed: network unreachable, HTTP error, truncated or corrupt file.

    Example:
        >>> isinstance(DownloadError('no network'), OSError)
        True
    """


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive advisory lock on `path` (created if needed).

    Other processes and threads taking the same lock wait until it is released.

    Example:
        >>> import tempfile, pathlib
        >>> lock = pathlib.Path(tempfile.mkdtemp()) / 'cache.lock'
        >>> with file_lock(lock):
        ...     lock.exists()
        True
    """
    with open(path, 'a+b') as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / 'f'
        >>> _ = path.write_bytes(b'abc')
        >>> sha256_of(path)[:16]
        'ba7816bf8f01cfea'
    """
    return _hash_file(hashlib.sha256(), path).hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    timeout: float = 10.0,
    hint: str = '',
    on_start: Callable[[], None] | None = None,
) -> pathlib.Path:
    """Downloads `url` to `dest`, verified by its SHA-256.

    A `dest.part` left by an interrupted download is resumed with an HTTP
    Range request when the server answers 206, otherwise restarted.

    Args:
        url: what to download.
        dest: the final file; written only once the checksum matches.
        sha256: the expected hex SHA-256.
        timeout: socket timeout in seconds (connect and each read).
        hint: appended to every error message (e.g. offline alternatives).
        on_start: called once the server has answered, before data flows
            (e.g. to print that a long download starts).

    Returns:
        `dest` as a `pathlib.Path`.

    Raises:
        DownloadError: unreachable server, HTTP error, or truncated download
            (the `.part` is kept for resuming), or a checksum mismatch (the
            `.part` is deleted). Nothing is ever left under `dest` on error.

    Example:
        >>> import tempfile, pathlib
        >>> src = pathlib.Path(tempfile.mkdtemp()) / 'src'
        >>> _ = src.write_bytes(b'abc')
        >>> digest = sha256_of(src)
        >>> download(src.as_uri(), src.with_name('dest'), digest).read_bytes()
        b'abc'
    """
    dest = pathlib.Path(dest)
    part = dest.with_name(dest.name + '.part')
    offset = part.stat().st_size if part.exists() else 0
    hasher = _hash_file(hashlib.sha256(), part) if offset else hashlib.sha256()
    if not offset or hasher.hexdigest() != sha256:
        request = urllib.request.Request(url)
        if offset:
            request.add_header('Range', f'bytes={offset}-')
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:  # No resume support: restart.
                    offset, hasher = 0, hashlib.sha256()
                if on_start:
                    on_start()
                expected = response.headers.get('Content-Length')
                received = 0
                with open(part, 'ab' if offset else 'wb') as out:
                    for chunk in iter(lambda: response.read(_CHUNK), b''):
                        out.write(chunk)
                        hasher.update(chunk)
                        received += len(chunk)
        except urllib.error.HTTPError as error:
            if error.code == 416:  # Range past the end: the .part is bad, restart.
                part.unlink()
                return download(url, dest, sha256, timeout=timeout, hint=hint, on_start=on_start)
            raise DownloadError(_message(url, f'HTTP error {error.code} {error.reason}', hint))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise DownloadError(_message(url, _cause(error), hint)) from error
        if expected is not None and received != int(expected):
            raise DownloadError(
                _message(
                    url,
                    f'the download was truncated: got {received} of {expected} bytes; '
                    f'the partial file {part} will be resumed on the next attempt',
                    hint,
                )
            )
    actual = hasher.hexdigest()
    if actual != sha256:
        part.unlink()
        raise DownloadError(
            _message(
                url,
                f'checksum mismatch: expected sha256 {sha256}, got {actual}. The corrupt '
                'download was deleted; try again, and if it persists the file on the '
                'server (or a proxy in between) is not the expected one',
                hint,
            )
        )
    os.replace(part, dest)
    return dest


def fetch(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    timeout: float = 10.0,
    hint: str = '',
    on_start: Callable[[], None] | None = None,
) -> pathlib.Path:
    """Returns a verified `dest`, downloading it unless a good copy is cached.

    A cached file with the wrong checksum is deleted and downloaded again
    (arguments as for `download`).
    Hold a `file_lock` around the call when others may fetch the same file.

    Example:
        >>> import tempfile, pathlib
        >>> src = pathlib.Path(tempfile.mkdtemp()) / 'src'
        >>> _ = src.write_bytes(b'abc')
        >>> dest = src.with_name('dest')
        >>> _ = dest.write_bytes(b'corrupted')
        >>> fetch(src.as_uri(), dest, sha256_of(src)).read_bytes()
        b'abc'
    """
    dest = pathlib.Path(dest)
    if dest.exists():
        if sha256_of(dest) == sha256:
            return dest
        dest.unlink()
    return download(url, dest, sha256, timeout=timeout, hint=hint, on_start=on_start)


def _hash_file(hasher, path: str | os.PathLike):
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b''):
            hasher.update(chunk)
    return hasher


def _cause(error: BaseException) -> str:
    if isinstance(error, http.client.IncompleteRead):
        return (
            f'the download was truncated: the connection closed early ({error}); '
            'the partial file will be resumed on the next attempt'
        )
    reason = getattr(error, 'reason', error)
    if isinstance(reason, socket.gaierror):
        return f'the host name could not be resolved ({reason})'
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f'the connection timed out ({reason or "no answer"})'
    if isinstance(reason, ConnectionRefusedError):
        return f'the connection was refused ({reason})'
    return f'{type(reason).__name__}: {reason}'


def _message(url: str, cause: str, hint: str) -> str:
    return f'Could not download {url}: {cause}.' + (f'\n{hint}' if hint else '')
