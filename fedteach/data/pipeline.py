"""A client's ``tf.data.Dataset`` that remembers how it was built.

``ClientData.create_tf_dataset_for_client`` returns a :class:`ClientDataset`. It
is a real ``tf.data.Dataset`` (iterate it, pass it to Keras, transform it any
way you like), but as long as only ``repeat``, ``map``, ``shuffle``, ``batch``
and ``prefetch`` are applied -- the tutorial's ``preprocess`` -- it also keeps
the *recipe*: the client's raw arrays plus that list of steps. The fast round
engine reads the recipe instead of running the ``tf.data`` pipeline, which lets
it lay out every client's stream as index tensors and train all clients in
one compiled function. The ``tf.data`` pipeline itself is only built when
something actually iterates the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.data.ops import dataset_ops

_LAZY_ATTRS = ("_variant_tensor_attr", "_graph_attr", "_options_attr")


@dataclass(frozen=True)
class Step:
    """One recorded transformation: ``kind`` is repeat, map, shuffle or batch."""

    kind: str
    args: tuple


class ClientDataset(dataset_ops.DatasetV2):
    """A ``tf.data.Dataset`` over one client's arrays that records its pipeline.

    Example:
        >>> import numpy as np
        >>> ds = ClientDataset({'label': np.arange(5, dtype=np.int32)})
        >>> ds = ds.repeat(2).batch(4)
        >>> [b['label'].numpy().tolist() for b in ds]
        [[0, 1, 2, 3], [4, 0, 1, 2], [3, 4]]
        >>> [s.kind for s in ds.steps]
        ['repeat', 'batch']
    """

    def __init__(self, source: dict[str, np.ndarray], steps: tuple = (), client_id: str | None = None):
        # DatasetV2.__init__ needs the variant tensor; it is created lazily by
        # __getattr__ the first time TensorFlow asks for it.
        self.source = source
        self.steps = tuple(steps)
        self.client_id = client_id
        self._tf_dataset = None

    # -- lazy tf.data ---------------------------------------------------------
    def __getattr__(self, name):
        if name in _LAZY_ATTRS:
            real = self.to_tf_dataset()
            dataset_ops.DatasetV2.__init__(self, real._variant_tensor)
            return object.__getattribute__(self, name)
        raise AttributeError(name)

    def to_tf_dataset(self) -> tf.data.Dataset:
        """The plain ``tf.data`` pipeline that this dataset stands for (built once)."""
        if self._tf_dataset is None:
            dataset = tf.data.Dataset.from_tensor_slices(self.source)
            for step in self.steps:
                dataset = _APPLY[step.kind](dataset, *step.args)
            self._tf_dataset = dataset
        return self._tf_dataset

    def _inputs(self):
        return []

    @property
    def element_spec(self):
        return self.to_tf_dataset().element_spec if self.steps else {
            k: tf.TensorSpec(v.shape[1:], tf.as_dtype(v.dtype)) for k, v in self.source.items()}

    def _then(self, kind: str, *args) -> "ClientDataset":
        return ClientDataset(self.source, self.steps + (Step(kind, args),), self.client_id)

    # -- recorded transformations ---------------------------------------------
    def repeat(self, count=None, name=None):
        if count is None or count < 0:  # an endless stream cannot be laid out
            return self.to_tf_dataset().repeat(count)
        return self._then("repeat", int(count))

    def map(self, map_func: Callable, num_parallel_calls=None, deterministic=None, name=None):
        return self._then("map", map_func)

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True, name=None):
        return self._then("shuffle", int(buffer_size), seed, bool(reshuffle_each_iteration))

    def batch(self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None, name=None):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size} (e.g. .batch(20)).")
        return self._then("batch", int(batch_size), bool(drop_remainder))

    def prefetch(self, buffer_size, name=None):
        return self

    def __repr__(self):
        steps = "".join(f".{s.kind}({', '.join(_short(a) for a in s.args)})" for s in self.steps)
        n = len(next(iter(self.source.values()))) if self.source else 0
        return f"<ClientDataset {self.client_id!r}: {n} examples{steps}>"


def _short(arg: Any) -> str:
    return getattr(arg, "__name__", repr(arg))


_APPLY = {
    "repeat": lambda ds, count: ds.repeat(count),
    "map": lambda ds, fn: ds.map(fn),
    "shuffle": lambda ds, buffer, seed, reshuffle: ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=reshuffle),
    "batch": lambda ds, size, drop: ds.batch(size, drop_remainder=drop),
}


def shuffle_with_buffer(stream: np.ndarray, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """Reorders ``stream`` the way ``tf.data``'s buffered shuffle does.

    A buffer of ``buffer_size`` elements is filled; each output is a uniformly
    chosen buffer element, replaced by the next input. Once the input has run
    out, each output is a uniformly chosen element of what is left, which makes
    the rest a uniform permutation of the buffer. With a buffer at least as
    long as the stream the whole output is a uniform permutation.

    Example:
        >>> out = shuffle_with_buffer(np.arange(6), 2, np.random.default_rng(0))
        >>> sorted(out.tolist())
        [0, 1, 2, 3, 4, 5]
    """
    n = len(stream)
    if buffer_size >= n:
        return stream[rng.permutation(n)]
    # While the input lasts, output i takes buffer slot picks[i] and input buffer_size + i takes its place.
    # So output i is the input that last refilled its slot before i, or the slot's first input: computed for
    # all outputs at once by sorting the picks by slot (stable: in time order within a slot).
    filling = n - buffer_size
    picks = (rng.random(filling) * buffer_size).astype(np.int64)
    by_slot = np.argsort(picks, kind="stable")
    slots = picks[by_slot]
    refilled = np.concatenate([[False], slots[1:] == slots[:-1]])  # the slot was picked before
    source = np.empty(filling, np.int64)
    source[by_slot] = np.where(refilled, buffer_size + np.concatenate([[0], by_slot[:-1]]), slots)
    last = np.concatenate([slots[1:] != slots[:-1], [True]])  # each picked slot's last refill stays in it
    left = np.arange(buffer_size)
    left[slots[last]] = buffer_size + by_slot[last]
    return stream[np.concatenate([source, left[rng.permutation(buffer_size)]])]
