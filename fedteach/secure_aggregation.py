"""Secure aggregation (Bonawitz et al. 2017), simulated faithfully: the server learns the sum, not the updates.

Each client ``u`` turns its update into integers modulo ``m = 2**modulus_bits``
(fixed point, :func:`quantize`) and sends the *masked* vector

.. math::

    y_u = x_u + \\mathrm{PRG}(b_u) + \\sum_{v > u} \\mathrm{PRG}(s_{uv}) - \\sum_{v < u} \\mathrm{PRG}(s_{uv}) \\pmod m

where ``s_uv = s_vu`` is a seed that clients ``u`` and ``v`` agree on by a
Diffie-Hellman key exchange (the server relays the public keys but cannot
compute it) and ``b_u`` is a self-mask seed. In the modular sum every pairwise
mask appears once with ``+`` and once with ``-``, so
``Σ y_u = Σ x_u + Σ PRG(b_u) (mod m)``. Before masking, every client splits its
secret key and ``b_u`` into Shamir shares, one per other client, any
``threshold`` of which rebuild the secret. After the masked vectors arrive:

* for a client that *survived*, the survivors send their shares of ``b_u``;
  the server rebuilds ``b_u`` and removes ``PRG(b_u)``;
* for a client that *dropped out after masking* (its pairwise masks are in
  the other clients' vectors, its own vector never came), the survivors send
  their shares of its secret key; the server rebuilds the key, recomputes the
  seeds ``s_uv`` it shared with the survivors and removes those masks.

The result is exactly the sum of the survivors' quantized updates. The server
never holds both secrets of one client, and its view of one client is
``y_u`` only: uniform over ``Z_m`` whatever ``x_u`` is (one mask it cannot
compute is enough).

The simulation is faithful in the arithmetic (modular sums, Diffie-Hellman in
the multiplicative group modulo the prime ``2**127 - 1``, Shamir sharing over
that prime field, a seeded PRG that expands a seed into a mask); it is not
secure software: the "secret" randomness comes from a seeded NumPy generator,
the group is far too small, and the shares travel unencrypted. The protocol's
steps are functions (:func:`generate_keys`, :func:`share_secrets`,
:func:`mask`, :func:`unmask`); :func:`secure_mean` runs them as an
``ft.aggregators`` reduction, so a process trains with it.

Example:
    >>> import numpy as np
    >>> updates = np.array([[0.5, -0.25], [0.25, 0.25], [-0.5, 1.0]])
    >>> view, total = simulate(quantize(updates, scale=4, modulus_bits=16), modulus_bits=16, seed=0)
    >>> view[0].values.tolist() == quantize(updates[0], scale=4, modulus_bits=16).tolist()  # client 0, masked
    False
    >>> dequantize(total, scale=4, modulus_bits=16).tolist()  # and the exact sum
    [0.25, 1.0]
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from fedteach.aggregators import Aggregator

__all__ = ["ClientSecrets", "MaskedUpdate", "PRIME", "client_view", "dequantize", "generate_keys", "mask", "quantize",
           "rebuild_secret", "secure_mean", "shamir_shares", "share_secrets", "simulate", "unmask"]

PRIME = 2 ** 127 - 1
"""The Mersenne prime of the Diffie-Hellman group and of the Shamir field."""
_GENERATOR = 3


# ------------------------------------------------------------------- fixed point


def _modulus(modulus_bits: int) -> int:
    if isinstance(modulus_bits, bool) or not isinstance(modulus_bits, (int, np.integer)) \
            or not 2 <= modulus_bits <= 63:
        raise ValueError(f"modulus_bits must be an integer from 2 to 63, got {modulus_bits!r} (e.g. 32).")
    return 2 ** int(modulus_bits)


def quantize(values, scale: float, modulus_bits: int = 32) -> np.ndarray:
    """Fixed point: ``round(values * scale) mod 2**modulus_bits`` as ``uint64`` (negative numbers wrap around).

    Example:
        >>> quantize([0.5, -0.25], scale=4, modulus_bits=8).tolist()
        [2, 255]
    """
    m = _modulus(modulus_bits)
    ints = np.rint(np.asarray(values, np.float64) * scale)
    if np.any(np.abs(ints) >= m // 2):
        raise ValueError(f"quantize: a value times scale={scale:g} reaches {np.abs(ints).max():g}, beyond the "
                         f"{modulus_bits}-bit range +-{m // 2 - 1}: use a smaller scale or more modulus_bits.")
    return ints.astype(np.int64).astype(np.uint64) & np.uint64(m - 1)   # two's complement, then mod m = 2**bits


def dequantize(ints, scale: float, modulus_bits: int = 32) -> np.ndarray:
    """The inverse of :func:`quantize`: integers mod ``m`` read as signed (``>= m/2`` is negative), divided by ``scale``.

    Example:
        >>> dequantize(np.array([2, 255], np.uint64), scale=4, modulus_bits=8).tolist()
        [0.5, -0.25]
    """
    m = _modulus(modulus_bits)
    ints = np.asarray(ints, np.uint64)
    signed = np.where(ints >= m // 2, ints.astype(np.float64) - m, ints.astype(np.float64))
    return signed / scale


# ------------------------------------------------------------------- keys and secret sharing


class ClientSecrets(NamedTuple):
    """What one client keeps to itself: its Diffie-Hellman secret key and its self-mask seed.

    ``public_key`` (``3**secret_key mod PRIME``) is the part it advertises.

    Example:
        >>> keys = generate_keys(2, seed=0)
        >>> keys[0].public_key == pow(3, keys[0].secret_key, PRIME)
        True
    """

    secret_key: int
    self_seed: int
    public_key: int


def _random_field_element(rng: np.random.Generator) -> int:
    return int.from_bytes(rng.bytes(16), "big") % PRIME


def generate_keys(num_clients: int, seed: int = 0) -> list[ClientSecrets]:
    """Each client's secret key, self-mask seed and public key (the protocol's "AdvertiseKeys" round).

    Example:
        >>> [k.public_key for k in generate_keys(3, seed=1)] == [k.public_key for k in generate_keys(3, seed=1)]
        True
    """
    if num_clients < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {num_clients}: with one client the "
                         "sum is that client's update.")
    rng = np.random.default_rng([int(seed), 0x5EC])
    keys = []
    for _ in range(num_clients):
        secret = 1 + _random_field_element(rng) % (PRIME - 2)
        keys.append(ClientSecrets(secret, _random_field_element(rng), pow(_GENERATOR, secret, PRIME)))
    return keys


def _pair_seed(own_secret_key: int, other_public_key: int) -> int:
    """Diffie-Hellman: ``pk_v ** sk_u = g ** (sk_u sk_v) = pk_u ** sk_v``, the seed both ends compute."""
    return pow(other_public_key, own_secret_key, PRIME)


def shamir_shares(secret: int, num_shares: int, threshold: int, rng: np.random.Generator) -> list[int]:
    """Shamir's ``threshold``-of-``num_shares`` sharing over ``GF(PRIME)``: share ``i`` is ``f(i + 1)``, ``f(0) = secret``.

    ``f`` has degree ``threshold - 1`` and random coefficients, so fewer than
    ``threshold`` shares say nothing about ``secret``.

    Example:
        >>> shares = shamir_shares(42, 5, 3, np.random.default_rng(0))
        >>> rebuild_secret({1: shares[1], 3: shares[3], 4: shares[4]})
        42
    """
    if not 1 <= threshold <= num_shares:
        raise ValueError(f"threshold must be between 1 and the number of shares ({num_shares}), got {threshold}.")
    coefficients = [int(secret) % PRIME] + [_random_field_element(rng) for _ in range(threshold - 1)]
    return [sum(c * pow(i + 1, k, PRIME) for k, c in enumerate(coefficients)) % PRIME for i in range(num_shares)]


def rebuild_secret(shares: dict) -> int:
    """Lagrange interpolation at 0 from ``{holder index: share}`` (at least ``threshold`` of them).

    Example:
        >>> rebuild_secret(dict(enumerate(shamir_shares(7, 3, 2, np.random.default_rng(1)))))
        7
    """
    points = [(holder + 1, share) for holder, share in shares.items()]
    secret = 0
    for j, (xj, yj) in enumerate(points):
        numerator, denominator = 1, 1
        for k, (xk, _) in enumerate(points):
            if k != j:
                numerator = numerator * (-xk) % PRIME
                denominator = denominator * (xj - xk) % PRIME
        secret = (secret + yj * numerator * pow(denominator, -1, PRIME)) % PRIME
    return secret


def share_secrets(keys: Sequence[ClientSecrets], threshold: int, seed: int = 0) -> list[dict]:
    """The "ShareKeys" round: ``held[v][u] = (share of sk_u, share of b_u)`` that client ``v`` keeps for client ``u``.

    (In the protocol the shares travel encrypted for ``v`` through the server.)

    Example:
        >>> keys = generate_keys(3, seed=0)
        >>> held = share_secrets(keys, threshold=2)
        >>> rebuild_secret({0: held[0][2][0], 1: held[1][2][0]}) == keys[2].secret_key
        True
    """
    rng = np.random.default_rng([int(seed), 0x5A4E])
    held = [{} for _ in keys]
    for u, key in enumerate(keys):
        key_shares = shamir_shares(key.secret_key, len(keys), threshold, rng)
        seed_shares = shamir_shares(key.self_seed, len(keys), threshold, rng)
        for v in range(len(keys)):
            held[v][u] = (key_shares[v], seed_shares[v])
    return held


# ------------------------------------------------------------------- masking


class MaskedUpdate(NamedTuple):
    """What the server receives from one client: its index and its masked vector (``uint64`` mod ``m``), nothing else.

    Example:
        >>> MaskedUpdate(0, np.zeros(2, np.uint64)).values.dtype
        dtype('uint64')
    """

    client: int
    values: np.ndarray


def _prg(seed: int, size: int, m: int) -> np.ndarray:
    """A mask: ``size`` numbers uniform over ``Z_m``, expanded from ``seed``."""
    return np.random.default_rng(seed).integers(0, m, size, dtype=np.uint64)


def mask(client: int, values, secrets: ClientSecrets, public_keys: Sequence[int], modulus_bits: int = 32,
         self_mask: bool = True) -> MaskedUpdate:
    """Client ``client`` masks its quantized vector: adds ``PRG(b_u)`` and ``PRG(s_uv)`` for ``v > u``, subtracts for ``v < u``.

    Args:
        client: this client's index ``u`` among the round's clients.
        values: its quantized update (``uint64`` mod ``m``, from :func:`quantize`), flattened.
        secrets: its own :class:`ClientSecrets`.
        public_keys: every client's public key, in client order.
        modulus_bits: ``m = 2**modulus_bits``.
        self_mask: add ``PRG(b_u)`` (Bonawitz et al.'s protection against a
            client that is declared dropped but whose vector arrives late).

    Example:
        >>> keys = generate_keys(2, seed=0)
        >>> pks = [k.public_key for k in keys]
        >>> y0 = mask(0, np.array([5], np.uint64), keys[0], pks, 8, self_mask=False)
        >>> y1 = mask(1, np.array([7], np.uint64), keys[1], pks, 8, self_mask=False)
        >>> int(y0.values[0]) != 5, int((y0.values[0] + y1.values[0]) % 256)   # masked; the pair's mask cancels
        (True, 12)
    """
    m = _modulus(modulus_bits)
    values = np.asarray(values, np.uint64).ravel()
    if values.size and values.max() >= m:
        raise ValueError(f"mask: values must be integers mod 2**{modulus_bits} (from quantize), got {values.max()}.")
    masked = values % m
    if self_mask:
        masked = (masked + _prg(secrets.self_seed, values.size, m)) % m
    for v, public_key in enumerate(public_keys):
        if v == client:
            continue
        pad = _prg(_pair_seed(secrets.secret_key, public_key), values.size, m)
        masked = (masked + pad) % m if v > client else (masked + (m - pad)) % m
    return MaskedUpdate(int(client), masked)


def unmask(received: Sequence[MaskedUpdate], public_keys: Sequence[int], held_shares: Sequence[dict],
           modulus_bits: int = 32, self_mask: bool = True, threshold: int | None = None) -> np.ndarray:
    """The server: sums the masked vectors it received and removes the masks; returns the survivors' sum mod ``m``.

    Clients whose index is missing from ``received`` dropped out after
    masking. The survivors hand in their shares (``held_shares[v]`` of each
    survivor ``v``): of the dropped clients' secret keys, whose pairwise masks
    the server recomputes and removes, and of the survivors' self-mask seeds.

    Args:
        received: the masked vectors that arrived.
        public_keys: every client's public key (the round's clients, in order).
        held_shares: ``held_shares[v][u]``, from :func:`share_secrets`; only survivors' are read.
        modulus_bits: ``m = 2**modulus_bits``.
        self_mask: whether the clients added self masks.
        threshold: shares needed to rebuild a secret; an error if fewer clients survived.

    Example:
        >>> keys = generate_keys(3, seed=0)
        >>> pks, held = [k.public_key for k in keys], share_secrets(keys, threshold=2)
        >>> received = [mask(u, np.array([u + 1], np.uint64), keys[u], pks, 8) for u in (0, 2)]  # client 1 dropped
        >>> unmask(received, pks, held, 8, threshold=2).tolist()
        [4]
    """
    m = _modulus(modulus_bits)
    survivors = sorted(r.client for r in received)
    if len(set(survivors)) != len(survivors):
        raise ValueError(f"unmask: a client sent two masked vectors (clients {survivors}).")
    threshold = len(public_keys) // 2 + 1 if threshold is None else threshold
    if len(survivors) < threshold:
        raise ValueError(f"secure aggregation: {len(survivors)} of {len(public_keys)} clients survived, fewer than "
                         f"the threshold {threshold} of shares needed to remove the masks; the round is aborted.")
    total = np.zeros_like(received[0].values)
    for r in received:
        total = (total + r.values) % m
    size = total.size
    holders = survivors[:threshold]
    for u in range(len(public_keys)):
        if u in survivors:
            if self_mask:
                b_u = rebuild_secret({v: held_shares[v][u][1] for v in holders})
                total = (total + (m - _prg(b_u, size, m))) % m
            continue
        sk_u = rebuild_secret({v: held_shares[v][u][0] for v in holders})  # u dropped: rebuild its key
        for v in survivors:  # v added PRG(s_vu) if u > v and subtracted it if u < v: undo that
            pad = _prg(_pair_seed(sk_u, public_keys[v]), size, m)
            total = (total + pad) % m if u < v else (total + (m - pad)) % m
    return total


def simulate(quantized, modulus_bits: int = 32, *, dropped: Sequence[int] = (), threshold: int | None = None,
             self_mask: bool = True, seed: int = 0) -> tuple[dict, np.ndarray]:
    """One run of the protocol on quantized updates ``[clients, d]``: returns (the server's view, the sum).

    The server's view is ``{client: MaskedUpdate}`` for the clients that were
    not ``dropped`` (those masked too, but their vectors never arrived). The
    sum is that of the survivors' quantized updates mod ``m``.

    Example:
        >>> q = quantize(np.array([[1.0], [2.0], [4.0]]), scale=1, modulus_bits=8)
        >>> view, total = simulate(q, 8, dropped=[2], seed=3)
        >>> sorted(view), total.tolist()
        ([0, 1], [3])
    """
    quantized = np.asarray(quantized, np.uint64)
    n = len(quantized)
    threshold = n // 2 + 1 if threshold is None else threshold
    keys = generate_keys(n, seed)
    public_keys = [k.public_key for k in keys]
    held = share_secrets(keys, threshold, seed)
    masked = [mask(u, quantized[u].ravel(), keys[u], public_keys, modulus_bits, self_mask) for u in range(n)]
    bad = [d for d in dropped if not 0 <= d < n]
    if bad:
        raise ValueError(f"dropped clients {bad} are not among the {n} clients (indices 0..{n - 1}).")
    view = {r.client: r for r in masked if r.client not in set(dropped)}
    total = unmask(list(view.values()), public_keys, held, modulus_bits, self_mask, threshold)
    return view, total.reshape(quantized.shape[1:])


# ------------------------------------------------------------------- as an aggregator


def secure_mean(clip_value: float = 1.0, modulus_bits: int = 32, *, dropout: float = 0.0,
                threshold: float = 0.5, self_mask: bool = True, server_view: list | None = None) -> Aggregator:
    """The unweighted mean of the clients' updates, computed by secure aggregation; an ``ft.aggregators`` reduction.

    Every number of every update is clipped to ``[-clip_value, clip_value]``
    and quantized with ``scale = (2**(modulus_bits-1) - 1) / (clients *
    clip_value)``, so the sum of a round's updates cannot wrap around; the
    quantization error of the mean is at most ``1 / (2 scale)`` per number.
    Each client drops out after masking with probability ``dropout`` (drawn
    from the round's randomness); the mean is that of the survivors. Keys,
    shares and masks are drawn from (seed, round).

    Args:
        clip_value: bound on each number of an update (e.g. the client
            learning rate times the largest gradient entry expected).
        modulus_bits: ``m = 2**modulus_bits``.
        dropout: probability that a client drops out after masking.
        threshold: fraction of the round's clients needed to unmask
            (Shamir threshold ``floor(threshold * clients) + 1``).
        self_mask: whether clients add self masks.
        server_view: a list; every round appends ``{'round', 'masked':
            {client: uint64 vector}, 'dropped', 'scale', 'modulus_bits',
            'shapes'}``: all the server receives of each client.

    Measurements: ``dropped_clients``, ``clipped_fraction`` (numbers clipped),
    ``quantization_step`` (``1 / scale``) and ``bytes_sent`` (the survivors'
    masked vectors).

    Example:
        >>> from fedteach.aggregators import RoundContext, chain, clip
        >>> updates = [np.array([[0.25, -0.5], [0.75, 0.5], [0.5, 0.0]])]
        >>> seen = []
        >>> mean, m = secure_mean(server_view=seen).aggregate(updates, np.ones(3), RoundContext(1, 0))
        >>> np.round(mean[0], 6).tolist(), m['dropped_clients'], sorted(seen[0]['masked'])
        ([0.5, 0.0], 0.0, [0, 1, 2])
    """
    if not clip_value > 0 or not math.isfinite(clip_value):
        raise ValueError(f"clip_value must be a finite number > 0, got {clip_value!r} (e.g. 1.0).")
    _modulus(modulus_bits)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}.")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a fraction in [0, 1), got {threshold!r} (Bonawitz et al.: above 1/2).")

    def aggregate(updates, weights, context):
        updates = [np.asarray(u) for u in updates]
        n = len(updates[0])
        if n < 2:
            raise ValueError("secure_mean needs at least 2 clients per round: with one client the sum the server "
                             "learns is that client's update.")
        flat = np.concatenate([u.reshape(n, -1).astype(np.float64) for u in updates], axis=1)
        scale = (2 ** (modulus_bits - 1) - 1) / (n * clip_value)
        if not np.all(np.isfinite(flat)):  # a diverged client: keep the NaN, so the round reports the divergence
            return [np.full(u.shape[1:], np.nan, u.dtype) for u in updates], {
                "dropped_clients": 0.0, "clipped_fraction": float("nan"), "quantization_step": float(1 / scale),
                "bytes_sent": 0}
        clipped = np.clip(flat, -clip_value, clip_value)
        quantized = quantize(clipped, scale, modulus_bits)
        rng = context.rng()
        dropped = [int(c) for c in np.flatnonzero(rng.random(n) < dropout)]
        session = int(rng.integers(2 ** 62))
        view, total = simulate(quantized, modulus_bits, dropped=dropped, threshold=int(threshold * n) + 1,
                               self_mask=self_mask, seed=session)
        if server_view is not None:
            server_view.append({"round": int(context.round_num), "masked": {c: r.values for c, r in view.items()},
                                "dropped": dropped, "scale": scale, "modulus_bits": int(modulus_bits),
                                "shapes": [u.shape[1:] for u in updates]})
        mean = dequantize(total, scale, modulus_bits) / len(view)
        out, start = [], 0
        for u in updates:
            size = int(np.prod(u.shape[1:]))
            out.append(mean[start:start + size].reshape(u.shape[1:]).astype(u.dtype))
            start += size
        return out, {"dropped_clients": float(len(dropped)), "clipped_fraction": float(np.mean(clipped != flat)),
                     "quantization_step": float(1 / scale),
                     "bytes_sent": int(len(view) * math.ceil(flat.shape[1] * modulus_bits / 8))}

    return Aggregator(aggregate, needs_clients=True,
                      measurement_names=("dropped_clients", "clipped_fraction", "quantization_step", "bytes_sent"),
                      name=f"secure_mean(clip={clip_value:g}, {modulus_bits} bits"
                           + (f", dropout={dropout:g})" if dropout else ")"))


def client_view(round_view: dict, client: int) -> list[np.ndarray]:
    """All the server can make of one client's masked vector: its numbers dequantized, shaped like the update.

    ``round_view`` is one entry of :func:`secure_mean`'s ``server_view``.
    The result looks like an update and is noise (uniform over the range);
    an attack on it gets noise.

    Example:
        >>> from fedteach.aggregators import RoundContext
        >>> seen = []
        >>> _ = secure_mean(server_view=seen).aggregate([np.zeros((3, 2, 2))], np.ones(3), RoundContext(1, 0))
        >>> [a.shape for a in client_view(seen[0], 1)], bool(np.any(client_view(seen[0], 1)[0] != 0))
        ([(2, 2)], True)
    """
    if client not in round_view["masked"]:
        raise KeyError(f"client {client} sent no masked vector in round {round_view['round']} (it dropped out, or "
                       f"is not among the round's clients {sorted(round_view['masked'])}).")
    values = dequantize(round_view["masked"][client], round_view["scale"], round_view["modulus_bits"])
    sizes = np.cumsum([int(np.prod(shape)) for shape in round_view["shapes"]])[:-1]
    return [part.reshape(shape) for part, shape in zip(np.split(values, sizes), round_view["shapes"])]
