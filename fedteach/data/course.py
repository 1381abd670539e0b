"""The course's dataset: federated EMNIST when available, else the offline digits."""

from __future__ import annotations

import os

from fedteach.data.client_data import ClientData
from fedteach.data.download import DownloadError
from fedteach.data.emnist import BASE_URL, is_emnist_cached, load_emnist, resolve_cache_dir
from fedteach.data.offline import load_offline_digits

_CHOICES = ('emnist', 'offline')


def load_course_data(
    prefer: str = 'emnist',
    cache_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    *,
    base_url: str = BASE_URL,
    timeout: float = 5.0,
) -> tuple[ClientData, ClientData]:
    """The dataset every notebook uses, with one printed line saying which and why.

    With `prefer='emnist'`, federated EMNIST (digits only) is used when it is
    cached or can be downloaded; otherwise the bundled offline digits (200
    simulated writers, same element structure). `prefer='offline'` never
    touches the network. The environment variable `FEDTEACH_DATA=offline` or
    `FEDTEACH_DATA=emnist` overrides `prefer` (then EMNIST errors are raised,
    not hidden).

    Args:
        prefer: 'emnist' or 'offline'.
        cache_dir: EMNIST's cache directory (see `load_emnist`).
        verbose: print the line saying which dataset is used.
        base_url: where EMNIST is downloaded from.
        timeout: network timeout in seconds for the EMNIST attempt.

    Returns:
        `(train, test)` `ClientData`.

    Raises:
        ValueError: `prefer` or `FEDTEACH_DATA` is not 'emnist' or 'offline'.

    Example:
        >>> train, test = load_course_data(prefer='offline')  # doctest: +ELLIPSIS
        Using the offline digits dataset (200 simulated writers, ... train examples): ...offline.
    """
    forced = os.environ.get('FEDTEACH_DATA', '').strip().lower()
    for name, value in (('prefer', prefer), ('FEDTEACH_DATA', forced)):
        if value and value not in _CHOICES:
            raise ValueError(f"{name} must be 'emnist' or 'offline', got {value!r}.")
    choice = forced or prefer
    reason = f'FEDTEACH_DATA={forced}' if forced else f'prefer={prefer!r}'
    if choice == 'emnist':
        cached = is_emnist_cached(cache_dir=cache_dir)
        try:
            train, test = load_emnist(
                cache_dir=cache_dir, base_url=base_url, timeout=timeout, verbose=verbose
            )
        except DownloadError as error:
            if forced:
                raise
            cause = str(error).splitlines()[0]
            reason = f'federated EMNIST is not cached and could not be downloaded ({cause})'
        else:
            where = f'cached in {resolve_cache_dir(cache_dir)}' if cached else 'downloaded'
            _say(verbose, f'Using federated EMNIST ({_size(train)}, {where}).')
            return train, test
    train, test = load_offline_digits()
    _say(verbose, f'Using the offline digits dataset ({_size(train, "simulated writers")}): {reason}.')
    return train, test


def _size(train: ClientData, clients: str = 'writers') -> str:
    examples = sum(train.num_examples(c) for c in train.client_ids)
    return f'{len(train)} {clients}, {examples:,} train examples'


def _say(verbose: bool, line: str) -> None:
    if verbose:
        print(line)
