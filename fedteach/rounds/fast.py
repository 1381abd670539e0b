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
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

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


@dataclass
class Trained:
    """What the compiled round returns, as NumPy (see :meth:`FastTrainer.train`)."""

    trainable: list         # the clients' example-weighted average, per variable
    non_trainable: list
    outputs: list           # per client, the local outputs of the model's metric aggregation
    clients: list | None    # per variable, the clients' trainable weights stacked [clients, ...]
    label_range: tuple      # (lowest, highest) mapped label 'y' of the round; (0, 0) without integer labels


def bucket(n: int) -> int:
    """Rounds ``n`` up to a power of two, so that rounds see few distinct shapes (few XLA compiles).

    Padding costs memory, not compute: the round's loop stops after the real steps.

    Example:
        >>> [bucket(n) for n in (1, 5, 46, 100, 1000)]
        [1, 8, 64, 128, 1024]
    """
    return 1 << max(n - 1, 0).bit_length()


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


def _client_stream(dataset: ClientDataset, rng: np.random.Generator) -> list[np.ndarray]:
    """The client's batches, as arrays of example indices, in training order."""
    n = len(next(iter(dataset.source.values())))
    stream = np.arange(n)
    batches = None
    for step in dataset.steps:
        if step.kind == "repeat":
            if batches is None:
                stream = np.tile(stream, step.args[0])
            else:
                batches = batches * step.args[0]
        elif step.kind == "shuffle":
            buffer, seed = step.args
            r = rng if seed is None else np.random.default_rng([seed, int(rng.integers(1 << 31))])
            if batches is None:
                stream = shuffle_with_buffer(stream, buffer, r)
            else:
                order = shuffle_with_buffer(np.arange(len(batches)), buffer, r)
                batches = [batches[i] for i in order]
        elif step.kind == "batch":
            size, drop = step.args
            cut = range(0, len(stream), size)
            batches = [stream[i:i + size] for i in cut if not drop or i + size <= len(stream)]
    return batches


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


def _aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """``np.empty(shape, dtype)`` starting at an ``align``-byte boundary (so a tensor can share it)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + size].view(dtype).reshape(shape)


def _tensor_sharing(array: np.ndarray) -> tf.Tensor:
    """A tensor of ``array`` that shares its memory where TensorFlow allows it (aligned memory), instead of
    ``tf.constant``'s copy (~0.3 ms for a round of EMNIST clients). ``array`` must never change afterwards."""
    try:
        return ops.EagerTensor(array, context.context().device_name, None)
    except Exception:  # noqa: BLE001 -- an internal constructor: any change in it falls back to the copy
        return tf.constant(array)


def _num_rows(dataset) -> int:
    return len(next(iter(dataset.source.values())))


class Layouter:
    """Turns a round's client datasets into a :class:`Layout` (step 1 above)."""

    def __init__(self, input_spec, num_classes: int | None = None):
        self.input_spec = input_spec
        self.num_classes = num_classes
        self._map_fns = {}
        self._checked = set()  # the (map functions, raw spec) keys whose mapped fields passed the checks
        self._last = None  # (the last round's datasets, their stacked examples, map functions, row offsets)

    def _mapper(self, fns, raw_spec):
        key = (_map_key(fns), tuple((k, s.dtype, tuple(s.shape)) for k, s in raw_spec.items()))
        if key not in self._map_fns:
            signature = [{k: tf.TensorSpec([None] + list(s.shape), s.dtype) for k, s in raw_spec.items()}]
            self._map_fns[key] = tf.function(_vectorized(fns), input_signature=signature, autograph=False)
        return self._map_fns[key]

    def layout(self, datasets, rng: np.random.Generator) -> Layout:
        """Lays out a round, shuffling with ``rng`` (client by client, in order); the same dataset objects
        as last round (the tutorial reuses them) are stacked once, like ``tf.data``'s ``cache()``: map
        functions are taken to be deterministic."""
        streams = [_client_stream(ds, rng) for ds in datasets]
        examples, map_fns, offsets = self.stacked(datasets)
        index, mask = _index(streams, offsets)
        rows = sum(_num_rows(ds) for ds in datasets)
        return Layout(examples, map_fns, rows, index, mask, mask.sum(axis=(1, 2)).astype(np.int64))

    def stacked(self, datasets):
        """The round's examples (see ``_stack``); for the same dataset objects as last time, the same ones."""
        if self._last is None or len(self._last[0]) != len(datasets) or any(
                a is not b for a, b in zip(self._last[0], datasets)):
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
        examples = {}
        for k, first in sources[0].items():
            # The padding rows are left as they are: the map treats each row on its own and no index points there.
            stacked = _aligned_empty((bucket(total),) + first.shape[1:], first.dtype)
            np.concatenate([src[k] for src in sources], out=stacked[:total])
            examples[k] = stacked
        self._check_mapped_fields(fns, examples, datasets[0].client_id)
        return {k: _tensor_sharing(v) for k, v in examples.items()}, fns, offsets

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
        rows = bucket(start)
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
    """Rows of each client's batches, ``[clients, steps, batch]``, and the mask of real examples."""
    steps = bucket(max((len(s) for s in streams), default=1))
    batch = max((len(b) for s in streams for b in s), default=1)
    index = np.zeros((len(streams), steps, batch), np.int32)
    mask = np.zeros((len(streams), steps, batch), np.float32)
    for c, stream in enumerate(streams):
        if not stream:
            continue
        if all(len(b) == batch for b in stream[:-1]):  # the usual case: full batches, then a shorter last one
            flat = np.concatenate(stream)
            rows = np.zeros(len(stream) * batch, np.int32)
            rows[:len(flat)] = flat + offsets[c]
            index[c, :len(stream)] = rows.reshape(len(stream), batch)
            mask[c, :len(stream)].reshape(-1)[:len(flat)] = 1.0
        else:
            for t, b in enumerate(stream):
                index[c, t, :len(b)] = b + offsets[c]
                mask[c, t, :len(b)] = 1.0
    return index, mask


def unsupported_model(model, optimizer) -> str | None:
    """Why the (model, client optimizer) pair cannot take the fast path, or None."""
    from fedteach.models.keras_model import KerasModel

    if not isinstance(model, KerasModel):
        return f"the model is a custom {type(model).__name__} (the fast path serves Keras models)"
    if type(optimizer) is not keras.optimizers.SGD:
        return f"the client optimizer is {type(optimizer).__name__} (the fast path runs plain SGD)"
    odd = [m.name for m in model.metrics if not isinstance(m, keras.metrics.MeanMetricWrapper)]
    if odd:
        return f"metrics {odd} are not means of per-example values"
    if optimizer.momentum or optimizer.nesterov:
        return "the client optimizer uses momentum"
    if not isinstance(optimizer._learning_rate, (float, int)) and not hasattr(optimizer._learning_rate, "assign"):
        return "the client learning rate is a schedule"
    return None


class FastEvaluator:
    """Federated evaluation of a Keras model in one compiled forward pass over the round's examples.

    Each distinct example is predicted once; a client's metrics are sums over
    its stream (epochs included, as the per-client loop would count them).
    """

    def __init__(self, model):
        self.model = model
        self.layouter = Layouter(model.input_spec)
        net = model.keras_model

        def per_example(x, y):
            predictions = net(x, training=False)
            values = [model.per_example_loss(y, predictions)]
            values += [tf.cast(m._fn(y, predictions, **m._fn_kwargs), tf.float32) for m in model.metrics]
            return tf.stack([tf.reshape(v, [-1]) for v in values], axis=1)

        self._per_example = per_example
        self._traces = {}  # (map functions' key, shapes) -> the compiled map + forward pass, traced

    def _traced(self, map_fns, examples):
        key = (_map_key(map_fns), tuple(v.shape for v in examples.values()))
        if key not in self._traces:
            apply_map = _vectorized(map_fns)

            def values(raw):
                mapped = apply_map(raw)
                return self._per_example(mapped["x"], mapped["y"])

            self._traces[key] = tf.function(values, jit_compile=True, autograph=False).get_concrete_function(examples)
        return self._traces[key]

    def outputs(self, datasets) -> list:
        """Per client, the local outputs of the model's metric aggregation (the model's weights as loaded)."""
        examples, map_fns, offsets = self.layouter.stacked(datasets)
        values = self._traced(map_fns, examples)(examples).numpy()  # [rows, 1 + metrics]
        outputs = []
        for ds, offset in zip(datasets, offsets):
            stream = _client_stream(ds, np.random.default_rng(0))
            rows = np.concatenate(stream) + offset if stream else np.zeros(0, np.int64)
            sums, n = values[rows].sum(axis=0), len(rows)
            out = collections.OrderedDict(
                (m.name, [np.float32(sums[1 + i]), np.float32(n)]) for i, m in enumerate(self.model.metrics))
            out["loss"] = [np.float32(sums[0]), np.float32(n)]
            out["num_examples"] = np.int64(n)
            outputs.append(out)
        return outputs


class FastTrainer:
    """Runs local SGD of all clients side by side in one compiled function (step 2)."""

    def __init__(self, model, learning_rate: float, proximal_mu: float = 0.0):
        self.model = model
        self.learning_rate = float(learning_rate)
        self.proximal_mu = float(proximal_mu)  # FedProx: local gradient += mu * (w - w_global)
        self.trace_count = 0
        self.jit_compile = True
        self._fns = {}  # (map functions' key, jit_compile) -> the round as a tf.function
        self._concrete = {}  # the same + return_clients and the layout's (bucketed) shapes -> its trace

    def _function(self, map_fns):
        key = (_map_key(map_fns), self.jit_compile)
        if key not in self._fns:
            apply_map = _vectorized(map_fns)

            def round_with_map(trainable, non_trainable, raw, rows, index, mask, weights, lr, return_clients):
                examples = apply_map(raw)
                return self._round(trainable, non_trainable, examples, index, mask, weights, lr,
                                   return_clients), _label_range(examples, rows)

            # No AutoGraph: the round is written with tf.while_loop and Keras 3 layers need none;
            # converting it would cost a few hundred milliseconds of the first round.
            self._fns[key] = tf.function(round_with_map, jit_compile=self.jit_compile, autograph=False)
        return self._fns[key]

    def _traced(self, layout: Layout, args):
        """The round traced for this kind of layout, called directly (a tf.function call would first work out
        which trace fits, ~0.2 ms); one trace, and one XLA compile, per map and bucketed shape."""
        key = (_map_key(layout.map_fns), self.jit_compile, args[-1],
               tuple(v.shape for v in layout.examples.values()), layout.index.shape)
        if key not in self._concrete:
            self._concrete[key] = self._function(layout.map_fns).get_concrete_function(*args)
        return self._concrete[key]

    def train(self, trainable, non_trainable, layout: Layout, return_clients: bool = False) -> Trained:
        """Trains every client of ``layout`` from the given weights; ``return_clients`` also returns the
        clients' trainable weights (for aggregators)."""
        args = ([tf.constant(w) for w in trainable], [tf.constant(w) for w in non_trainable],
                layout.examples, tf.constant(layout.rows),
                tf.constant(layout.index), tf.constant(layout.mask),
                tf.constant(layout.num_examples.astype(np.float32)), tf.constant(self.learning_rate),
                bool(return_clients))
        try:
            (tv, ntv, loss_sums, metric_states, *clients), label_range = self._traced(layout, args)(*args)
        except tf.errors.InvalidArgumentError as error:
            if not self.jit_compile or "xla" not in str(error).lower():
                raise
            # e.g. a layer whose vectorized gradient needs a dynamic loop: run the round as a plain graph
            self.jit_compile = False
            (tv, ntv, loss_sums, metric_states, *clients), label_range = self._traced(layout, args)(*args)
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
                       [w.numpy() for w in clients[0]] if return_clients else None,
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

    def _round(self, trainable, non_trainable, examples, index, mask, weights, lr, return_clients=False):
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
            if self.proximal_mu:  # only on real steps: padded steps of a finished client leave it unchanged
                grads = [g + tf.cast(active(w), w.dtype) * self.proximal_mu * (w - w0)
                         for g, w, w0 in zip(grads, tv, trainable)]
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
        if return_clients:
            return average(tv), average(ntv), loss_sum, ms, tv
        return average(tv), average(ntv), loss_sum, ms
