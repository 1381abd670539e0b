"""The fast round engine: every client of a round in one compiled function.

The clients' datasets are :class:`~fedteach.data.pipeline.ClientDataset`\\ s
built the tutorial's way (``repeat`` / ``map`` / ``shuffle`` / ``batch``). Instead
of running each ``tf.data`` pipeline, the engine reads the recipe:

1. *layout*: the round's raw examples are stacked (each once, however many
   epochs), and each client's stream of epochs x shuffled batches becomes
   rows of an index tensor ``[clients, steps, batch]`` with a mask for the
   padding. Sizes are rounded up to buckets so that a new mix of clients
   reuses the compiled function.
2. *train*: one XLA-compiled function applies the map functions to all raw
   examples at once (vectorized), runs local SGD of all clients side by side
   (the Keras model's stateless call, vectorized over the client axis),
   accumulates the Keras metrics' states per client and returns the
   example-weighted average of the clients' models.

Compiled once per architecture: the compiled round and evaluation functions
depend only on the model's architecture (:func:`architecture_key`), the map
functions and the raw examples' structure. Learning rate, FedProx's ``mu``,
SCAFFOLD's per-client corrections and all the layout's sizes (clients, steps,
batch, rows) are inputs of one trace (a round with corrections is a trace of
its own, so FedAvg's round stays as it was); XLA compiles it once per distinct
bucketed shape. The traces live in a module-level cache shared by every
process and evaluation built from the same architecture, so a new process
with other settings (a dashboard slider) reuses them instead of compiling
again.
"""
from __future__ import annotations

import collections
import json
import math
import threading
import weakref
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

from fedteach.data.pipeline import ClientDataset, shuffle_with_buffer


@dataclass
class Layout:
    """A round's data laid out for the compiled function (see module docs)."""

    examples: dict          # field -> tensor [rows_bucketed, ...], the examples before ``map_fns``
    map_fns: tuple          # the map functions that the compiled function applies to ``examples``
    rows: int               # the real rows of ``examples`` (the rest is padding)
    index: np.ndarray       # int32 [clients, steps, batch], rows of ``examples``
    mask: np.ndarray        # float32 [clients, steps, batch], 1 for real examples
    num_examples: np.ndarray  # int64 [clients], examples each client trains on
    local_steps: np.ndarray   # int64 [clients], each client's batches (its local steps)


@dataclass
class Trained:
    """What the compiled round returns, as NumPy (see :meth:`FastTrainer.train`)."""

    trainable: list         # the clients' example-weighted average, per variable
    non_trainable: list
    outputs: list           # per client, the local outputs of the model's metric aggregation
    clients: list | None    # per variable, the clients' trainable weights stacked [clients, ...]
    label_range: tuple      # (lowest, highest) mapped label 'y' of the round; (0, 0) without integer labels


MIN_STEPS = 128
"""The fewest steps a layout's index holds: local epochs from 1 to ~10 on small clients share one shape."""


def bucket(n: int, least: int = 1) -> int:
    """Rounds ``n`` up to a power of two (at least ``least``), so that rounds see few distinct shapes (few
    XLA compiles).

    Padding costs memory, not compute: the round's loop stops after the real steps.

    Example:
        >>> [bucket(n) for n in (1, 5, 46, 100, 1000)], bucket(5, least=64)
        ([1, 8, 64, 128, 1024], 64)
    """
    return max(1 << max(n - 1, 0).bit_length(), least)


def unsupported_pipeline(dataset) -> str | None:
    """Why ``dataset`` cannot take the fast path, or None if it can.

    Example:
        >>> import numpy as np
        >>> ds = ClientDataset({'x': np.zeros((4, 2), np.float32)})
        >>> unsupported_pipeline(ds.batch(2)) is None, unsupported_pipeline(ds)
        (True, 'the dataset is not batched')
    """
    if not isinstance(dataset, ClientDataset):
        return (f"a client dataset is a {type(dataset).__name__}, not a dataset from "
                "ClientData.create_tf_dataset_for_client transformed only by repeat/map/shuffle/batch")
    kinds = [s.kind for s in dataset.steps]
    if kinds.count("batch") != 1:
        return "the dataset is not batched" if "batch" not in kinds else "the dataset is batched twice"
    if "map" in kinds[kinds.index("batch"):]:
        return "a map is applied after batch"
    return None


def _client_stream(dataset: ClientDataset, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The client's batches in training order, with ``tf.data``'s semantics: the example indices of all
    batches one after another, and each batch's length.

    Each step transforms the stream of the steps before it, and a ``repeat``
    iterates that stream afresh every time, as ``tf.data`` re-creates the
    iterator of its input: a ``shuffle`` before a ``repeat`` draws a new order
    every epoch (``reshuffle_each_iteration=True``, the default) or replays the
    same one (``False``); a ``shuffle`` after a ``repeat`` mixes examples
    across epoch boundaries within its buffer; a ``batch`` before a ``repeat``
    ends every epoch with its own short batch, one after it lets batches span
    epochs. Shuffles use ``rng`` (client by client, in order), mixed with
    the shuffle's ``seed`` where it has one.
    """
    n = _num_rows(dataset)
    steps = dataset.steps
    shufflers = {}  # step position -> a function giving the random generator of the step's next iteration

    def shuffler(k, seed, reshuffle):
        if k not in shufflers:
            if seed is None and reshuffle:
                shufflers[k] = lambda: rng
            else:
                entropy = [int(rng.integers(1 << 31))] if seed is None else [seed, int(rng.integers(1 << 31))]
                if reshuffle:  # one seeded generator: a new order each iteration
                    generator = np.random.default_rng(entropy)
                    shufflers[k] = lambda: generator
                else:  # the same order each iteration
                    shufflers[k] = lambda: np.random.default_rng(entropy)
        return shufflers[k]()

    def run(k):
        """The output of the first ``k`` steps, iterated afresh: example indices, or batches after ``batch``."""
        if k == 0:
            return np.arange(n)
        step = steps[k - 1]
        if step.kind == "repeat":
            count = step.args[0]
            if any(s.kind == "shuffle" for s in steps[:k - 1]):
                parts = [run(k - 1) for _ in range(count)]  # each iteration draws its own order
            else:  # no draw upstream: every iteration is the same
                parts = [run(k - 1)] * count
            if any(s.kind == "batch" for s in steps[:k - 1]):
                return [b for part in parts for b in part]
            return np.concatenate(parts) if parts else np.arange(0)
        upstream = run(k - 1)
        if step.kind == "shuffle":
            buffer, seed, *rest = step.args
            r = shuffler(k, seed, rest[0] if rest else True)
            if isinstance(upstream, list):
                return [upstream[i] for i in shuffle_with_buffer(np.arange(len(upstream)), buffer, r)]
            return shuffle_with_buffer(upstream, buffer, r)
        if step.kind == "batch":
            size, drop = step.args
            return [upstream[i:i + size] for i in range(0, len(upstream), size)
                    if not drop or i + size <= len(upstream)]
        return upstream  # map: the same examples, transformed later

    last = [s.kind for s in steps].index("batch")  # batched once: see unsupported_pipeline
    if last == len(steps) - 1:  # the usual recipe: batch last, so the batches are cut from one flat order
        order = run(last)
        size, drop = steps[last].args
        full, rest = divmod(len(order), size)
        lengths = np.full(full + (1 if rest and not drop else 0), size, np.int64)
        if len(lengths) > full:
            lengths[-1] = rest
        return order[:int(lengths.sum())], lengths
    batches = run(len(steps))
    lengths = np.array([len(b) for b in batches], np.int64)
    return (np.concatenate(batches) if batches else np.zeros(0, np.int64)), lengths


def _autograph(fn):
    """``fn`` converted by AutoGraph (Python control flow on tensors works), or ``fn`` itself if it cannot be."""
    try:
        return tf.autograph.to_graph(fn)
    except Exception:  # builtins, callables without source: run them as they are
        return fn


def _map_key(fns) -> tuple:
    key = []
    for fn in fns:
        cells = tuple(id(c.cell_contents) for c in (getattr(fn, "__closure__", None) or ()))
        key.append((getattr(fn, "__code__", fn), cells))
    return tuple(key)


def _vectorized(fns):
    """A function that applies the map functions ``fns``, in order, to a batch of examples at once."""
    converted = [_autograph(fn) for fn in fns]  # as tf.data's map converts its function

    def one(element):
        for fn in converted:
            element = fn(element)
        return element

    return (lambda batch: tf.vectorized_map(one, batch)) if converted else (lambda batch: batch)


def _map_groups(datasets) -> list:
    """The datasets' map functions and, for each distinct list of them, the indices of its datasets."""
    groups = collections.OrderedDict()
    for i, ds in enumerate(datasets):
        fns = [s.args[0] for s in ds.steps if s.kind == "map"]
        groups.setdefault(_map_key(fns), (fns, []))[1].append(i)
    return list(groups.values())


def _aligned(shape, dtype, allocate) -> np.ndarray:
    """An array made by ``allocate`` (``np.empty`` or ``np.zeros``) starting at a 64-byte boundary (so a tensor
    can share it)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = allocate(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + size].view(dtype).reshape(shape)


def _aligned_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting at a 64-byte boundary (so a tensor can share it)."""
    return _aligned(shape, dtype, np.empty)


def _aligned_zeros(shape, dtype) -> np.ndarray:
    """``np.zeros(shape, dtype)`` starting at a 64-byte boundary (so a tensor can share it)."""
    return _aligned(shape, dtype, np.zeros)


def _tensor_sharing(array: np.ndarray) -> tuple[tf.Tensor, bool]:
    """A tensor of ``array`` and whether it shares the array's memory.

    Through DLPack the tensor is the array's memory itself (no copy, ~1 us). TensorFlow's kernels need
    64-byte aligned memory (an unaligned tensor aborts the process), so an unaligned or non-contiguous array,
    or one that DLPack refuses (read-only), is copied by ``tf.constant`` instead. A shared tensor sees later
    writes to ``array``: a :class:`Layouter` that reuses its memory writes each round's examples into the
    same array.

    Example:
        >>> array = _aligned_empty((2, 3), np.float32)
        >>> array[:] = 1.0
        >>> tensor, shared = _tensor_sharing(array)
        >>> array[0, 0] = 5.0
        >>> shared, float(tensor[0, 0])
        (True, 5.0)
    """
    if array.ctypes.data % 64 or not array.flags.c_contiguous:
        return tf.constant(array), False
    try:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__()), True
    except Exception:  # noqa: BLE001 -- any refusal (read-only, strides, an older TensorFlow) falls back to the copy
        return tf.constant(array), False


def _tensor(value) -> tf.Tensor:
    """``tf.constant(value)`` for a NumPy array or scalar, in a third of the time (~8 us instead of ~25 us; a
    round makes about ten); ``tf.constant`` itself where the direct constructor refuses the value."""
    try:
        return ops.EagerTensor(value, context.context().device_name, None)
    except Exception:  # noqa: BLE001 -- an internal constructor: any change in it falls back to tf.constant
        return tf.constant(value)


def _num_rows(dataset) -> int:
    return len(next(iter(dataset.source.values())))


def _without_names(config):
    """A Keras config without its ``name`` entries (Keras numbers layer names across the session)."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return [_without_names(v) for v in config]
    return config


def _builtin(obj) -> bool:
    return type(obj).__module__.startswith("keras.")


def _sublayers(layer):
    yield layer
    for sub in getattr(layer, "layers", ()):
        yield from _sublayers(sub)


def _described(obj, config):
    """``obj``'s class and config as a hashable key when Keras defines it fully, else ``obj`` itself."""
    if not _builtin(obj):
        return obj  # a user-defined class: its config may not say everything it computes (identity key)
    return (type(obj).__qualname__, json.dumps(_without_names(config), sort_keys=True, default=repr))


def architecture_key(model) -> tuple:
    """A hashable fingerprint of what a compiled round or evaluation of a Keras ``model`` depends on.

    Two wrapped Keras models get the same key when they compute the same
    function of the same weights: built-in Keras layers with the same configs
    (layer names aside), the same weight shapes and dtypes, the same loss and
    metrics (classes, configs, names) and the same ``input_spec``. Anything
    user-defined (a custom layer, loss or model class) enters the key by
    identity, so it is never shared by mistake.

    Example:
        >>> import fedteach as ft
        >>> from fedteach.experiment import build_keras_model
        >>> batch = {'x': np.zeros((2, 784), np.float32), 'y': np.zeros((2, 1), np.int32)}
        >>> a, b, c = (ft.from_compiled_keras_model(build_keras_model(kind, lr), batch)
        ...            for kind, lr in (('linear', 0.02), ('linear', 0.5), ('cnn', 0.02)))
        >>> architecture_key(a) == architecture_key(b), architecture_key(a) == architecture_key(c)
        (True, False)
    """
    if model in _ARCHITECTURE_KEYS:
        return _ARCHITECTURE_KEYS[model]
    net = model.keras_model
    layers = list(_sublayers(net))[1:]
    if all(_builtin(layer) for layer in layers) and _builtin(net):
        structure = _described(net, net.get_config())
    else:
        structure = net
    loss = model.loss
    loss_key = _described(loss, loss.get_config()) if isinstance(loss, keras.losses.Loss) else loss
    metrics = tuple((type(m).__qualname__, m.name, getattr(m, "_fn", None),
                     repr(sorted(getattr(m, "_fn_kwargs", {}).items()))) for m in model.metrics)
    weights = tuple((tuple(v.shape), str(v.dtype)) for v in model.trainable_variables + model.non_trainable_variables)
    spec = tuple((k, s.dtype.name, tuple(s.shape)) for k, s in model.input_spec.items())
    _ARCHITECTURE_KEYS[model] = key = (structure, loss_key, metrics, weights, spec)
    return key


_ARCHITECTURE_KEYS = weakref.WeakKeyDictionary()  # model -> its architecture_key (a built model keeps its structure)


@dataclass
class _Compiled:
    """The compiled functions of one architecture (one kind of round, or the evaluation), shared by processes."""

    owner: object                      # the first trainer or evaluator of the architecture: its traces close over it
    traces: dict = field(default_factory=dict)  # (map functions' key, shapes, options) -> concrete function
    keep: list = field(default_factory=list)     # the map functions of ``traces`` (their ids are in the keys)
    jit_compile: bool = True           # False once XLA failed, or decided from the layers: the plain graph is used
    xla_error: str | None = None       # why the round is not XLA-compiled (XLA's error's first line, or the decision)
    trace_count: int = 0


_COMPILED: collections.OrderedDict = collections.OrderedDict()  # (class, architecture_key) -> _Compiled, LRU last
MAX_COMPILED = 16
"""How many architectures' compiled functions (a trainer's and an evaluator's count apart) the cache keeps: the
least recently used go first, so that a long session of many models does not hold every compiled function."""
_MAPPERS: dict = {}  # (map functions' key, raw spec) -> (the vectorized map as a tf.function, the map functions)


NO_XLA_FOR_CONVOLUTIONS = (
    "the model has convolutions, which XLA cannot compile vectorized over the clients' filters (a loop of "
    "dynamic size); decided from the layers, without trying")
"""Why a round of a model with convolutions is not XLA-compiled (decided from its layers, never attempted)."""

_LOCK = threading.RLock()
"""Guards the shared caches below and the stacked examples of shared layouters: a dashboard compiles the round
of a new setting in a background thread (see :mod:`fedteach.widgets.controller`) while rounds may run."""


def _compiled(owner, model) -> _Compiled:
    key = (type(owner), architecture_key(model))
    with _LOCK:
        if key not in _COMPILED:
            _COMPILED[key] = _Compiled(owner)
            if has_convolutions(model.keras_model):  # the evaluation too: a plain graph compiles 3x faster
                _COMPILED[key].jit_compile, _COMPILED[key].xla_error = False, NO_XLA_FOR_CONVOLUTIONS
            while len(_COMPILED) > MAX_COMPILED:  # a process that holds an evicted entry keeps using it
                _COMPILED.popitem(last=False)
        _COMPILED.move_to_end(key)
        return _COMPILED[key]


def _shapes(examples) -> tuple:
    return tuple((k, tf.as_dtype(v.dtype).name, tuple(v.shape)) for k, v in examples.items())


def _caller(concrete):
    """A function calling ``concrete`` with the tensors of its arguments in ``tf.nest`` order, without binding
    them to its signature again (0.2-0.4 ms a call); the public call where that private path is missing or its
    inputs are not the flattened arguments (checked by dtype and shape)."""
    call_flat = getattr(concrete, "_call_flat", None)
    spec = concrete.structured_input_signature[0]
    flat_spec = tf.nest.flatten(spec)
    inputs = concrete.inputs[:len(concrete.inputs) - len(concrete.captured_inputs)]
    if call_flat is None or len(inputs) != len(flat_spec) or any(
            i.dtype != s.dtype or i.shape != s.shape for i, s in zip(inputs, flat_spec)):
        return lambda *args: concrete(*args)
    captured = concrete.captured_inputs
    return lambda *args: call_flat(tf.nest.flatten(args), captured)


class Layouter:
    """Turns a round's client datasets into a :class:`Layout` (step 1 above)."""

    def __init__(self, input_spec, num_classes: int | None = None, min_rows: int = 1, reuse_memory: bool = False):
        self.input_spec = input_spec
        self.row_bytes = sum(s.dtype.size * math.prod(d or 1 for d in s.shape[1:]) for s in input_spec.values())
        """The bytes of one mapped example (an unknown dimension counted as 1)."""
        self.num_classes = num_classes
        self.min_rows = min_rows  # the fewest rows of stacked examples (padding shares one shape across rounds)
        self._checked = set()  # the (map functions, raw spec) keys whose mapped fields passed the checks
        self._last = None  # (the last round's datasets, their stacked examples, map functions, row offsets)
        # reuse_memory: each round's examples are written into the same arrays, whose tensors share them (no new
        # memory to fault in, no new tensor). Only for a layouter whose layouts are used before its next one.
        self._buffers = {} if reuse_memory else None  # (field, shape, dtype) -> (array, the tensor sharing it)

    def _mapper(self, fns, raw_spec):
        key = (_map_key(fns), tuple((k, s.dtype, tuple(s.shape)) for k, s in raw_spec.items()))
        with _LOCK:  # one trace per key, also with a background warm-up
            if key not in _MAPPERS:  # shared by every Layouter: the trace depends on the functions and the spec only
                signature = [{k: tf.TensorSpec([None] + list(s.shape), s.dtype) for k, s in raw_spec.items()}]
                _MAPPERS[key] = (tf.function(_vectorized(fns), input_signature=signature, autograph=False), tuple(fns))
        return _MAPPERS[key][0]

    def layout(self, datasets, rng: np.random.Generator) -> Layout:
        """Lays out a round, shuffling with ``rng`` (client by client, in order); datasets over the same
        examples as last round (the tutorial reuses its datasets; a ClientData hands out the same read-only
        arrays for a client) are stacked once, like ``tf.data``'s ``cache()``: map functions are taken to be
        deterministic."""
        streams = [_client_stream(ds, rng) for ds in datasets]
        examples, map_fns, offsets = self.stacked(datasets)
        index, mask = _index(streams, offsets)
        rows = sum(_num_rows(ds) for ds in datasets)
        return Layout(examples, map_fns, rows, index, mask, np.array([len(o) for o, _ in streams], np.int64),
                      np.array([len(lengths) for _, lengths in streams], np.int64))

    def stacked(self, datasets):
        """The round's examples (see ``_stack``); for datasets over the same examples as last time (see
        ``_same_examples``), the same ones."""
        if self._last is None or len(self._last[0]) != len(datasets) or not all(
                map(_same_examples, self._last[0], datasets)):
            self._last = (list(datasets), *self._stack(datasets))
        return self._last[1:]

    def _stack(self, datasets):
        """The round's raw examples in one array per field, padded to a bucket of rows, with each
        client's first row; clients with different map functions are mapped here instead."""
        groups = _map_groups(datasets)
        if len(groups) > 1:
            examples, offsets = self._map(datasets)
            return examples, (), offsets
        fns = tuple(groups[0][0])
        sources = [ds.source for ds in datasets]
        sizes = [_num_rows(ds) for ds in datasets]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        total = sum(sizes)
        arrays, examples = {}, {}
        for k, first in sources[0].items():
            # The padding rows are left as they are: the map treats each row on its own and no index points there.
            shape = (bucket(total, self.min_rows),) + first.shape[1:]
            stacked, tensor = (self._buffers or {}).get((k, shape, first.dtype), (None, None))
            if stacked is None:
                stacked = _aligned_empty(shape, first.dtype)
            np.concatenate([src[k] for src in sources], out=stacked[:total])
            if tensor is None:
                tensor, shared = _tensor_sharing(stacked)
                if shared and self._buffers is not None:
                    self._buffers[(k, shape, first.dtype)] = (stacked, tensor)
            arrays[k], examples[k] = stacked, tensor
        self._check_mapped_fields(fns, arrays, datasets[0].client_id)
        return examples, fns, offsets

    def _check_mapped_fields(self, fns, raw, client_id):
        """Checks the fields and shapes that ``fns`` make of ``raw`` examples (traced once per kind)."""
        key = (_map_key(fns), tuple((k, v.dtype, v.shape[1:]) for k, v in raw.items()))
        if key not in self._checked:
            spec = {k: tf.TensorSpec(v.shape[1:], tf.as_dtype(v.dtype)) for k, v in raw.items()}
            self._check_fields(self._mapper(fns, spec).get_concrete_function().structured_outputs, client_id)
            self._checked.add(key)

    def _map(self, datasets):
        """The round's examples, mapped and padded to a bucket of rows, and each client's first row."""
        # Each group's raw examples are mapped in one call; the groups' outputs are stacked as they
        # come (the index tensor points at rows, so clients need not be in order).
        parts, offsets, start = [], [0] * len(datasets), 0
        for fns, members in _map_groups(datasets):
            raw = {k: np.concatenate([datasets[i].source[k] for i in members]) for k in datasets[members[0]].source}
            spec = {k: tf.TensorSpec(v.shape[1:], tf.as_dtype(v.dtype)) for k, v in raw.items()}
            out = self._mapper(fns, spec)(raw) if fns else {k: tf.constant(v) for k, v in raw.items()}
            self._check_fields(out, datasets[members[0]].client_id)
            if self.num_classes is not None and "y" in out:
                self._check_labels(out["y"].numpy(), [datasets[i] for i in members])
            for i in members:
                offsets[i] = start
                start += _num_rows(datasets[i])
            parts.append(out)
        rows = bucket(start, self.min_rows)
        examples = {}
        for k in self.input_spec:
            field = parts[0][k] if len(parts) == 1 else tf.concat([out[k] for out in parts], 0)
            examples[k] = tf.pad(field, [[0, rows - start]] + [[0, 0]] * (field.shape.rank - 1))
        return examples, offsets

    def labels_in_range(self, label_range) -> bool:
        """Whether a round's (lowest, highest) mapped label fits the model's classes."""
        low, high = label_range
        return self.num_classes is None or low > high or (0 <= low and high < self.num_classes)

    def check_labels(self, datasets):
        """Raises an error that names the client whose mapped labels lie outside the model's classes."""
        self._map(datasets)  # maps each client's examples and checks their labels
        raise ValueError(f"a label lies outside the model's {self.num_classes} classes.")  # not reached

    def _check_fields(self, out, client_id):
        if set(out) != set(self.input_spec):
            raise ValueError(
                f"client {client_id!r}: its batches have fields {sorted(out)} but the "
                f"model's input_spec expects {sorted(self.input_spec)}. Check the preprocess function's map.")
        for key, spec in self.input_spec.items():
            shape = tuple(out[key].shape[1:])
            expected = tf.TensorShape(spec.shape[1:])
            if not expected.is_compatible_with(shape):
                raise ValueError(
                    f"client {client_id!r}, field {key!r}: examples have shape "
                    f"{list(shape)} but the model's input_spec expects {expected.as_list()} (batch shape "
                    f"{spec.shape}). Reshape it in the preprocess function.")

    def _check_labels(self, labels, datasets):
        start = 0
        for ds in datasets:
            n = _num_rows(ds)
            mine, start = labels[start:start + n], start + n
            if not mine.size:
                continue
            low, high = int(mine.min()), int(mine.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"client {ds.client_id!r}, field 'y': label {high if high >= self.num_classes else low} is "
                    f"outside the model's {self.num_classes} classes (labels must be 0..{self.num_classes - 1}; "
                    f"this client's labels span {low}..{high}). Give the last layer at least {high + 1} units, "
                    "or fix the labels.")


def _same_examples(a, b) -> bool:
    """Whether two client datasets stack to the same examples: the same dataset, or two over the same arrays
    (objects, not values: the arrays that ``_stack`` read are kept alive with ``a``) with the same map
    functions.

    Example:
        >>> source = {'x': np.zeros((3, 2), np.float32)}
        >>> a, b = ClientDataset(source).batch(2), ClientDataset(source).repeat(2).batch(3)
        >>> _same_examples(a, b), _same_examples(a, ClientDataset({'x': np.zeros((3, 2), np.float32)}))
        (True, False)
    """
    if a is b:
        return True
    maps = [[s.args[0] for s in ds.steps if s.kind == "map"] for ds in (a, b)]
    return (a.source.keys() == b.source.keys() and all(a.source[k] is b.source[k] for k in a.source)
            and len(maps[0]) == len(maps[1]) and all(f is g for f, g in zip(*maps)))


def _label_range(examples, rows):
    """The lowest and highest integer label ``y`` among the first ``rows`` examples; (0, 0) if none."""
    y = examples.get("y")
    if y is None or not y.dtype.is_integer:
        return tf.zeros([2], tf.int64)
    y = tf.reshape(tf.cast(y, tf.int64), [tf.shape(y)[0], -1])
    real = (tf.range(tf.shape(y)[0]) < rows)[:, None]
    low = tf.reduce_min(tf.where(real, y, tf.int64.max))
    high = tf.reduce_max(tf.where(real, y, tf.int64.min))
    return tf.stack([low, high])  # no labels: low > high


def _where_active(count, new, old):
    """Per client, ``new`` where the client had real examples this step, else ``old``."""
    def active(w):
        return tf.reshape(count > 0, tf.concat([[-1], tf.ones_like(tf.shape(w)[1:])], 0))
    return [tf.where(active(a), a, b) for a, b in zip(new, old)]


def _index(streams, offsets):
    """Rows of each client's batches, ``[clients, steps, batch]``, and the mask of real examples; ``streams``
    are the clients' ``(order, lengths)`` (see ``_client_stream``).

    Example:
        >>> streams = [(np.array([2, 0, 1]), np.array([2, 1])), (np.array([1, 0]), np.array([2]))]
        >>> index, mask = _index(streams, offsets=[0, 3])
        >>> index[:, :2].tolist(), mask[:, :2].tolist()
        ([[[2, 0], [1, 0]], [[4, 3], [0, 0]]], [[[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    """
    batches = np.array([len(lengths) for _, lengths in streams], np.int64)  # per client
    steps = bucket(int(batches.max(initial=1)), MIN_STEPS)
    lengths = np.concatenate([lengths for _, lengths in streams])  # every batch, client after client
    batch = int(lengths.max(initial=1))
    index = _aligned_zeros((len(streams), steps, batch), np.int32)  # aligned: its tensor shares its memory
    mask = _aligned_zeros((len(streams), steps, batch), np.float32)
    # Batch t of client c starts at flat position (c * steps + t) * batch; its examples follow one another.
    first_batch = np.cumsum(batches) - batches
    starts = (np.repeat(np.arange(len(streams)) * steps - first_batch, batches) + np.arange(len(lengths))) * batch
    first_example = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - first_example, lengths) + np.arange(int(lengths.sum()))
    rows = np.concatenate([order + offset for (order, _), offset in zip(streams, offsets)])
    index.reshape(-1)[positions] = rows
    mask.reshape(-1)[positions] = 1.0
    return index, mask


_CONVOLUTIONS = tuple(getattr(keras.layers, name) for name in (
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D",
    "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D") if hasattr(keras.layers, name))


def has_convolutions(net) -> bool:
    """Whether a Keras model has a convolution layer: its fast round then runs as a plain graph, without first
    trying XLA (see :data:`NO_XLA_FOR_CONVOLUTIONS`).

    Example:
        >>> from fedteach.experiment import build_keras_model
        >>> has_convolutions(build_keras_model('linear')), has_convolutions(build_keras_model('cnn'))
        (False, True)
    """
    return any(isinstance(layer, _CONVOLUTIONS) for layer in _sublayers(net))


def unsupported_model(model, optimizer=None) -> str | None:
    """Why the (model, client optimizer) pair cannot take the fast path, or None; without an optimizer (for
    evaluation), only the model is checked."""
    from fedteach.models.keras_model import KerasModel

    if not isinstance(model, KerasModel):
        return f"the model is a custom {type(model).__name__} (the fast path serves Keras models)"
    odd = [m.name for m in model.metrics if not isinstance(m, keras.metrics.MeanMetricWrapper)]
    if odd:
        return f"metrics {odd} are not means of per-example values"
    if optimizer is None:
        return None
    if type(optimizer) is not keras.optimizers.SGD:
        return f"the client optimizer is {type(optimizer).__name__} (the fast path runs plain SGD)"
    if optimizer.momentum or optimizer.nesterov:
        return "the client optimizer uses momentum"
    if not isinstance(optimizer._learning_rate, (float, int)) and not hasattr(optimizer._learning_rate, "assign"):
        return "the client learning rate is a schedule"
    return None


class FastEvaluator:
    """Federated evaluation of a Keras model in one compiled forward pass over the round's examples.

    Each distinct example is predicted once; a client's metrics are sums over
    its stream (epochs included, as the per-client loop would count them).
    The weights are inputs of the compiled pass, which is shared by every
    evaluator of the same architecture. The pass is XLA-compiled, except for a
    model with convolutions: as a plain graph its first call takes 0.12 s
    instead of XLA's 0.33 s, and later calls half the time (the course's CNN).
    """

    def __init__(self, model):
        self.model = model
        self._compiled = _compiled(self, model)
        owner = self._compiled.owner
        # The first evaluator of the architecture keeps the stacked examples of the last datasets it saw:
        # an evaluation on the same datasets by another evaluator (a new Experiment) reuses them.
        self.layouter = owner.layouter if owner is not self else Layouter(model.input_spec)
        self._last_rows = None  # (datasets, their rows, counts), see _rows

    def _per_example(self, trainable, non_trainable, x, y):
        model = self._compiled.owner.model
        predictions, _ = model.keras_model.stateless_call(trainable, non_trainable, x, training=False)
        values = [model.per_example_loss(y, predictions)]
        values += [tf.cast(m._fn(y, predictions, **m._fn_kwargs), tf.float32) for m in model.metrics]
        return tf.stack([tf.reshape(v, [-1]) for v in values], axis=1)

    def _traced(self, map_fns, examples, weights):
        shared = self._compiled
        key = (_map_key(map_fns), _shapes(examples))
        with _LOCK:  # one trace per key, also with a background warm-up
            if key not in shared.traces:
                apply_map = _vectorized(map_fns)
                per_example = shared.owner._per_example

                def values(trainable, non_trainable, raw, rows):
                    mapped = apply_map(raw)
                    y = mapped["y"]  # the padding rows' labels (left as they were) made 0: a plain graph checks them
                    real = tf.range(tf.shape(y)[0]) < rows
                    real = tf.reshape(real, tf.concat([[-1], tf.ones_like(tf.shape(y)[1:])], 0))
                    return per_example(trainable, non_trainable, mapped["x"], tf.where(real, y, tf.zeros_like(y)))

                shared.traces[key] = _caller(tf.function(
                    values, jit_compile=shared.jit_compile, autograph=False).get_concrete_function(
                    *tf.nest.map_structure(tf.TensorSpec.from_tensor, (*weights, examples, tf.constant(0)))))
                shared.keep.append(tuple(map_fns))
        return shared.traces[key]

    def outputs(self, weights, datasets) -> list:
        """Per client, the local outputs of the model's metric aggregation with ``weights`` (ModelWeights)."""
        with _LOCK:  # the first evaluator's stacked examples are shared
            examples, map_fns, offsets = self.layouter.stacked(datasets)
            rows, counts = self._rows(datasets, offsets)
        arrays = ([_tensor(w) for w in weights.trainable.values()],
                  [_tensor(w) for w in weights.non_trainable.values()])
        real_rows = _tensor(np.int32(sum(_num_rows(ds) for ds in datasets)))
        values = self._traced(map_fns, examples, arrays)(*arrays, examples, real_rows).numpy()  # [rows, 1 + metrics]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        sums = np.zeros((len(counts), values.shape[1]), values.dtype)
        has = counts > 0  # reduceat needs non-empty segments
        if has.any():
            sums[has] = np.add.reduceat(values[rows], starts[has], axis=0)
        outputs = []
        for total, n in zip(sums, counts):
            out = collections.OrderedDict(
                (m.name, [np.float32(total[1 + i]), np.float32(n)]) for i, m in enumerate(self.model.metrics))
            out["loss"] = [np.float32(total[0]), np.float32(n)]
            out["num_examples"] = np.int64(n)
            outputs.append(out)
        return outputs

    def _rows(self, datasets, offsets):
        """Every client's rows of the stacked examples, in stream order, concatenated, and their counts;
        the same for the same dataset objects as last time (the evaluation's shuffles use a fixed seed)."""
        owner = self._compiled.owner
        last = owner._last_rows
        if last is None or len(last[0]) != len(datasets) or any(a is not b for a, b in zip(last[0], datasets)):
            streams = [_client_stream(ds, np.random.default_rng(0)) for ds in datasets]
            rows = [order.astype(np.int64) + offset for (order, _), offset in zip(streams, offsets)]
            owner._last_rows = (list(datasets), np.concatenate(rows), np.array([len(r) for r in rows]))
        return owner._last_rows[1:]


class FastTrainer:
    """Runs local SGD of all clients side by side in one compiled function (step 2).

    The learning rate and FedProx's ``mu`` (local gradient ``+= mu * (w -
    w_global)``) are inputs of the compiled round, which every trainer of the
    same class and architecture shares (see the module docs). So is SCAFFOLD's
    correction: a constant per client and variable added to every local
    gradient (``corrections`` of :meth:`train`); a round without it is traced
    without it.
    """

    def __init__(self, model, learning_rate: float, proximal_mu: float = 0.0):
        self.model = model
        self.learning_rate = float(learning_rate)
        self.proximal_mu = float(proximal_mu)
        self._learning_rate, self._proximal_mu = _tensor(np.float32(learning_rate)), _tensor(np.float32(proximal_mu))
        self.weight_bytes = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.trainable_variables)
        """The bytes of one copy of the model's trainable weights."""
        self._compiled = _compiled(self, model)

    @property
    def trace_count(self) -> int:
        """How many times the shared round functions of this architecture were traced."""
        return self._compiled.trace_count

    @trace_count.setter
    def trace_count(self, value: int) -> None:
        self._compiled.trace_count = value

    @property
    def jit_compile(self) -> bool:
        """Whether the round runs XLA-compiled (False after XLA could not compile it: a plain graph)."""
        return self._compiled.jit_compile

    @property
    def xla_error(self) -> str | None:
        """Why the round is not XLA-compiled (XLA's error's first line, or :data:`NO_XLA_FOR_CONVOLUTIONS`), else
        None."""
        return self._compiled.xla_error

    def _traced(self, layout: Layout, args):
        """The round traced for this kind of layout (its sizes left open), called directly (a tf.function call
        would first work out which trace fits, ~0.2 ms); XLA compiles it once per bucketed shape."""
        shared = self._compiled
        corrected = len(args) > 9  # SCAFFOLD's corrections follow FedProx's mu
        key = (_map_key(layout.map_fns), _shapes(layout.examples), layout.index.shape, shared.jit_compile, corrected)
        with _LOCK:  # one trace per key, also with a background warm-up
            if key not in shared.traces:
                apply_map = _vectorized(layout.map_fns)
                owner = shared.owner

                def round_with_map(trainable, non_trainable, raw, rows, index, mask, weights, lr, mu, *corrections):
                    examples = apply_map(raw)
                    # The clients' weights are always returned (they exist anyway): an aggregator costs no new trace.
                    return owner._round(trainable, non_trainable, examples, index, mask, weights, lr, mu,
                                        *corrections), _label_range(examples, rows)

                # Static shapes: XLA compiles a trace once (with open sizes it would compile again whenever the
                # index values changed). No AutoGraph: the round is written with tf.while_loop and Keras 3 layers
                # need none; converting it would cost a few hundred milliseconds of the first round.
                function = tf.function(round_with_map, jit_compile=shared.jit_compile, autograph=False)
                shared.traces[key] = _caller(function.get_concrete_function(
                    *tf.nest.map_structure(tf.TensorSpec.from_tensor, args)))
                shared.keep.append(tuple(layout.map_fns))
        return shared.traces[key]

    def train(self, trainable, non_trainable, layout: Layout, return_clients: bool = False,
              corrections: list | None = None) -> Trained:
        """Trains every client of ``layout`` from the given weights; ``return_clients`` also returns the
        clients' trainable weights (for aggregators). ``corrections`` (SCAFFOLD's ``c - c_i``), one array
        ``[clients, ...]`` per trainable variable, is added to every local gradient of each client."""
        args = ([_tensor(w) for w in trainable], [_tensor(w) for w in non_trainable],
                layout.examples, _tensor(np.int32(layout.rows)), _tensor_sharing(layout.index)[0],
                _tensor_sharing(layout.mask)[0],
                _tensor(layout.num_examples.astype(np.float32)), self._learning_rate, self._proximal_mu)
        if corrections is not None:
            args += ([_tensor(c) for c in corrections],)
        try:
            (tv, ntv, loss_sums, metric_states, clients), label_range = self._traced(layout, args)(*args)
        except tf.errors.InvalidArgumentError as error:
            if not self.jit_compile or "xla" not in str(error).lower():
                raise
            # e.g. a layer whose vectorized gradient needs a dynamic loop: run the round as a plain graph
            with _LOCK:
                self._compiled.jit_compile = False
                self._compiled.xla_error = ("XLA could not compile it vectorized over clients: "
                                            + str(error).strip().splitlines()[0][:300])
            (tv, ntv, loss_sums, metric_states, clients), label_range = self._traced(layout, args)(*args)
        outputs = []
        metrics = self.model.metrics
        loss_sums = loss_sums.numpy()
        states = [[s.numpy() for s in per_metric] for per_metric in metric_states]
        for c, n in enumerate(layout.num_examples):
            out = collections.OrderedDict()
            for m, state in zip(metrics, states):
                out[m.name] = [s[c] for s in state]
            out["loss"] = [np.float32(loss_sums[c]), np.float32(n)]
            out["num_examples"] = np.int64(n)
            outputs.append(out)
        return Trained([w.numpy() for w in tv], [w.numpy() for w in ntv], outputs,
                       [w.numpy() for w in clients] if return_clients else None,
                       tuple(int(v) for v in label_range.numpy()))

    def _start(self, trainable, non_trainable, index):
        """Every client's copy of the weights, zero metric states, and the per-client forward pass."""
        clients = tf.shape(index)[0]
        stack = lambda ws: [tf.tile(w[None], tf.concat([[clients], tf.ones_like(tf.shape(w))], 0)) for w in ws]
        ms = [[tf.zeros([clients]), tf.zeros([clients])] for _ in self.model.metrics]
        model, net = self.model, self.model.keras_model

        def forward(args):
            """One client's batch: predictions, new non-trainable weights and per-example loss. The loss
            sees the model's own output op, so Keras takes a softmax's logits, as in ``fit``."""
            tv_c, ntv_c, x_c, y_c = args
            preds, ntv_new = net.stateless_call(tv_c, ntv_c, x_c, training=True)
            return preds, ntv_new, model.per_example_loss(y_c, preds)

        return clients, stack(trainable), stack(non_trainable), ms, forward

    def _update_metrics(self, ms, y, preds, mask, count):
        """Adds a step's per-example metric values (masked) to each client's (total, count) states.

        The values are computed on all clients' examples at once, outside the vectorized forward pass
        (Keras' argmax uses a bitcast that ``vectorized_map`` would run as a loop over clients)."""
        flat_y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0))
        flat_preds = tf.reshape(preds, tf.concat([[-1], tf.shape(preds)[2:]], 0))
        updated = []
        for metric, (total, seen) in zip(self.model.metrics, ms):
            values = tf.reshape(tf.cast(metric._fn(flat_y, flat_preds, **metric._fn_kwargs), tf.float32),
                                tf.shape(mask))
            updated.append([total + tf.reduce_sum(values * mask, axis=1), seen + count])
        return updated

    def _round(self, trainable, non_trainable, examples, index, mask, weights, lr, mu, corrections=None):
        """The round's averaged weights, the clients' loss sums and metric states, and the clients' weights."""
        self.trace_count += 1
        clients, tv, ntv, ms, forward = self._start(trainable, non_trainable, index)
        loss_sum = tf.zeros([clients])

        def step(t, tv, ntv, ms, loss_sum):
            rows = index[:, t]
            m = mask[:, t]                                   # [clients, batch]
            x = tf.gather(examples["x"], rows)
            y = tf.gather(examples["y"], rows)
            count = tf.reduce_sum(m, axis=1)                 # real examples per client
            with tf.GradientTape() as tape:
                tape.watch(tv)
                preds, ntv_new, per_example = tf.vectorized_map(forward, (tv, ntv, x, y))
                loss = tf.reduce_sum(per_example * m, axis=1) / tf.maximum(count, 1.0)
                total = tf.reduce_sum(loss)  # clients' losses are independent: grads stay per client
            grads = tape.gradient(total, tv)
            active = lambda w: tf.reshape(count > 0, tf.concat([[-1], tf.ones_like(tf.shape(w)[1:])], 0))
            # FedProx, only on real steps: padded steps of a finished client leave it unchanged (mu = 0: FedAvg)
            grads = [g + tf.cast(active(w), w.dtype) * mu * (w - w0) for g, w, w0 in zip(grads, tv, trainable)]
            if corrections is not None:  # SCAFFOLD: + (c - c_i), on real steps only
                grads = [g + tf.cast(active(w), w.dtype) * c for g, w, c in zip(grads, tv, corrections)]
            tv_new = [w - lr * g for w, g in zip(tv, grads)]
            ntv_new = _where_active(count, ntv_new, ntv)
            ms_new = self._update_metrics(ms, y, preds, m, count)
            keep = lambda new, old: [tf.ensure_shape(a, b.shape) for a, b in zip(new, old)]  # pfor may drop them
            return t + 1, keep(tv_new, tv), keep(ntv_new, ntv), ms_new, loss_sum + loss * count

        real_steps = tf.reduce_sum(tf.cast(tf.reduce_any(mask > 0, axis=[0, 2]), tf.int32))  # a prefix
        _, tv, ntv, ms, loss_sum = tf.while_loop(
            lambda t, *_: t < real_steps, step, (tf.constant(0), tv, ntv, ms, loss_sum))
        share = weights / tf.reduce_sum(weights)
        average = lambda ws: [tf.tensordot(share, w, axes=1) for w in ws]
        return average(tv), average(ntv), loss_sum, ms, tv
