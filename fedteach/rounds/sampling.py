"""Choosing the clients of a round."""
from __future__ import annotations

import numpy as np


def sample_clients(client_ids, num_clients: int, round_num: int, seed: int = 0) -> list:
    """Picks ``num_clients`` distinct clients for a round, uniformly at random.

    The choice depends only on ``(seed, round_num)``: re-running round k after
    restoring a checkpoint picks the same clients.

    Example:
        >>> ids = [f'writer_{i}' for i in range(10)]
        >>> sample_clients(ids, 3, round_num=1) == sample_clients(ids, 3, round_num=1)
        True
        >>> len(set(sample_clients(ids, 3, round_num=2)))
        3
    """
    client_ids = list(client_ids)
    if not 1 <= num_clients <= len(client_ids):
        raise ValueError(f"num_clients must be between 1 and the number of clients ({len(client_ids)}), "
                         f"got {num_clients}. Ask for at most {len(client_ids)} clients per round, or use more "
                         "clients (e.g. load_offline_digits(num_clients=...)).")
    rng = np.random.default_rng([seed, round_num])
    return [client_ids[i] for i in rng.choice(len(client_ids), size=num_clients, replace=False)]
