"""The general round engine: any :class:`fedteach.Model`, any ``tf.data`` pipeline.

A round (:meth:`ClientRunner.train_round`) takes one of two routes:

* *laid out*: when every client dataset was built by
  ``ClientData.create_tf_dataset_for_client`` and transformed only by
  ``repeat`` / ``map`` / ``shuffle`` / ``batch`` (the tutorial's ``preprocess``),
  the round is laid out exactly as the fast engine lays it out
  (:class:`fedteach.rounds.fast.Layouter`, with the same random generator), so
  both engines see the same examples in the same order. One compiled function
  then applies the map functions to all of the round's examples at once and runs
  every client in turn -- its batches gathered from the layout, the model's own
  ``forward_pass`` and the client optimizer -- and returns the clients' weights
  and local variables. A hand-written model and the Keras model it re-creates
  give the same metrics, round for round, on either engine.
* *tf.data*: any other pipeline is iterated by ``tf.data``, one client at a
  time, in a compiled loop reused across clients and rounds. Before iterating,
  every shuffle in the pipeline is re-seeded from ``(seed, round, client
  position)`` (see :func:`reseeded`), so the same seed gives the same metrics.

In the laid-out round, each run of full batches is one XLA-compiled loop (the
batch shape is fixed there); a shorter batch, usually a client's last, is one
step of a plain graph, so that XLA does not compile once per batch size. A
model that XLA cannot compile (an op without an XLA kernel) runs as a plain
graph throughout, with the same results. ``model.report_local_outputs()`` is
called inside the compiled round, so it must be made of TensorFlow operations
(a ``tf.function``, as in the tutorial).

What one seed does not fix: the random draws of a model's own stateful random
operations (``tf.random.uniform`` in a hand-written forward pass, or a Keras
``Dropout``'s seed generator) continue from round to round; two runs from the
same seed in fresh processes agree, but a round run again after restoring a
checkpoint draws other numbers. Use stateless random operations with a seed
taken from the batch, or no randomness in the forward pass, where that
matters. For the limits of re-seeding ``tf.data`` pipelines see
:func:`reseeded`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import tensor_util

from fedteach.data.pipeline import ClientDataset
from fedteach.rounds import fast
from fedteach.rounds.state import ModelWeights


class ClientRunner:
    """Runs local training or evaluation of a round's clients, or of one client at a time.

    Example:
        >>> import keras, numpy as np, tensorflow as tf, fedteach as ft
        >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer='zeros')])
        >>> model = ft.from_keras_model(net, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     {'x': tf.TensorSpec([None, 4], tf.float32), 'y': tf.TensorSpec([None, 1], tf.int32)})
        >>> runner = ClientRunner(model, keras.optimizers.SGD(0.1))
        >>> data = tf.data.Dataset.from_tensor_slices({'x': np.ones((6, 4), 'float32'),
        ...                                            'y': np.ones((6, 1), 'int32')}).batch(3)
        >>> weights, n, outputs = runner.train(runner.weights(), data)
        >>> n, int(outputs['num_examples'])
        (6, 6)
    """

    def __init__(self, model, optimizer=None, proximal_mu: float = 0.0):
        self.model = model
        self.optimizer = optimizer
        self.proximal_mu = float(proximal_mu)  # FedProx: local gradient += mu * (w - w_global)
        self._anchor = [tf.Variable(v.numpy(), trainable=False) for v in model.trainable_variables] if proximal_mu else []
        self._initial_local = [v.numpy() for v in model.local_variables]
        if optimizer is not None:
            optimizer.build(model.trainable_variables)
            self._initial_optimizer = [v.numpy() for v in optimizer.variables]
        self._trainable_names = _names(model, "trainable")
        self._non_trainable_names = _names(model, "non_trainable")
        self.trace_count = 0
        self._train_fn = tf.function(self._train_loop)
        self._evaluate_fn = tf.function(self._evaluate_loop)
        self._layouter = None  # created by the first laid-out round
        self.local_steps = np.zeros(0, np.int64)  # the local steps each client of the last round took
        self._round_fns = {}  # (map functions' key, raw examples' spec, XLA or not) -> the compiled laid-out round
        self.jit_compile = True  # runs of full batches under XLA, until XLA cannot compile the model
        self._report_structure = None  # the structure of report_local_outputs(), seen when the round is traced

    def weights(self) -> ModelWeights:
        """The model's current weights as plain arrays."""
        m = self.model
        return ModelWeights.from_lists(
            [v.numpy() for v in m.trainable_variables], [v.numpy() for v in m.non_trainable_variables],
            self._trainable_names, self._non_trainable_names)

    def load(self, weights: ModelWeights) -> None:
        """Sets the model's variables to ``weights`` and resets the local metrics."""
        for v, w in zip(self.model.trainable_variables, weights.trainable.values()):
            v.assign(w)
        for v, w in zip(self.model.non_trainable_variables, weights.non_trainable.values()):
            v.assign(w)
        for v, w in zip(self.model.local_variables, self._initial_local):
            v.assign(w)

    def train(self, weights: ModelWeights, dataset, correction: list | None = None):
        """Trains from ``weights`` on one client's ``dataset``, iterated by ``tf.data`` as it is.

        ``correction`` (SCAFFOLD's ``c - c_i``, one array per trainable
        variable) is added to every local gradient. Returns ``(new_weights,
        num_examples_trained, local_outputs)``; :attr:`local_steps` holds the
        steps taken.
        """
        self.load(weights)
        for v, w in zip(self.optimizer.variables, self._initial_optimizer):
            v.assign(w)
        for v, w in zip(self._anchor, weights.trainable.values()):
            v.assign(w)
        correction = None if correction is None else [tf.constant(c) for c in correction]
        n, steps = self._train_fn(dataset.with_options(_OPTIONS), correction)
        self.local_steps = np.array([int(steps)], np.int64)
        return self.weights(), int(n), self.model.report_local_outputs()

    def train_round(self, weights: ModelWeights, datasets, seed: int, round_num: int,
                    corrections: list | None = None) -> list:
        """Trains every client of a round from the server's ``weights``, reproducibly for ``(seed, round_num)``.

        Client datasets with a recipe are laid out as the fast engine lays them
        out (same order of examples for the same seed and round); any other
        pipeline runs through ``tf.data`` with its shuffles re-seeded from
        ``(seed, round_num, position of the client)``. ``corrections`` (SCAFFOLD's
        ``c - c_i``), one array ``[clients, ...]`` per trainable variable, is
        added to every local gradient of each client.

        Returns, per client, ``(new_weights, num_examples_trained, local_outputs)``;
        :attr:`local_steps` then holds each client's number of local steps.

        Example:
            >>> import keras, numpy as np, fedteach as ft
            >>> cd = ft.ClientData.from_arrays(ft.make_emnist_like_clients(2, [7, 5], seed=0))
            >>> data = ft.make_federated_data(cd, cd.client_ids, ft.preprocess_for_tutorial(2, 4))
            >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
            >>> model = ft.from_keras_model(net, 'sparse_categorical_crossentropy', dict(data[0].element_spec))
            >>> runner = ClientRunner(model, keras.optimizers.SGD(0.02))
            >>> [n for _, n, _ in runner.train_round(runner.weights(), data, seed=0, round_num=1)]
            [14, 10]
        """
        datasets = list(datasets)
        if not self.lays_out(datasets):
            results, steps = [], []
            for i, ds in enumerate(datasets):
                correction = None if corrections is None else [c[i] for c in corrections]
                results.append(self.train(weights, reseeded(_as_tf_dataset(ds), _client_seed(seed, round_num, i)),
                                          correction))
                steps.append(self.local_steps[0])
            self.local_steps = np.array(steps, np.int64)
            return results
        if self._layouter is None:
            # Few shapes, few XLA compiles; its layouts are used within their round: it reuses its memory
            self._layouter = fast.Layouter(self.model.input_spec, min_rows=1024, reuse_memory=True)
        layout = self._layouter.layout(datasets, np.random.default_rng([seed, round_num]))
        return self._laid_out_round(weights, layout, corrections)

    def evaluate(self, weights: ModelWeights, dataset):
        """Runs the forward pass over ``dataset``; returns ``(num_examples, local_outputs)``."""
        self.load(weights)
        n = int(self._evaluate_fn(dataset.with_options(_OPTIONS)))
        return n, self.model.report_local_outputs()

    # -- the laid-out round ---------------------------------------------------
    def lays_out(self, datasets) -> bool:
        """Whether :meth:`train_round` lays these datasets out (it then checks their mapped fields and shapes
        against the model's ``input_spec`` itself), rather than iterating them with ``tf.data``."""
        return isinstance(self.model.input_spec, Mapping) and all(
            fast.unsupported_pipeline(ds) is None for ds in datasets)

    def _laid_out_round(self, weights: ModelWeights, layout, corrections=None) -> list:
        sizes = layout.mask.sum(axis=2).astype(np.int32)  # [clients, steps]: each batch's real examples, a prefix
        steps = (sizes > 0).sum(axis=1).astype(np.int32)
        self.local_steps = steps.astype(np.int64)
        args = (layout.examples, tf.constant(layout.index), tf.constant(sizes), tf.constant(steps),
                tf.constant(_full_runs(sizes, layout.index.shape[2])),
                [tf.constant(w) for w in weights.trainable.values()],
                [tf.constant(w) for w in weights.non_trainable.values()])
        if corrections is not None:
            args += ([tf.constant(c) for c in corrections],)
        try:
            trainable, non_trainable, outputs, counts = self._round_function(layout, corrections is not None)(*args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            if not self.jit_compile or "xla" not in str(error).lower():
                raise
            self.jit_compile = False  # e.g. an op without an XLA kernel in the forward pass: plain graphs
            trainable, non_trainable, outputs, counts = self._round_function(layout, corrections is not None)(*args)
        trainable = [w.numpy() for w in trainable]
        non_trainable = [w.numpy() for w in non_trainable]
        outputs = [o.numpy() for o in outputs]
        template = self._report_structure
        return [(ModelWeights.from_lists([w[c] for w in trainable], [w[c] for w in non_trainable],
                                         self._trainable_names, self._non_trainable_names),
                 int(n), tf.nest.pack_sequence_as(template, [o[c] for o in outputs]))
                for c, n in enumerate(counts.numpy())]

    def _round_function(self, layout, corrected: bool = False):
        raw_spec = {k: tf.TensorSpec([None] + list(v.shape[1:]), v.dtype) for k, v in layout.examples.items()}
        key = (fast._map_key(layout.map_fns), tuple((k, s.dtype, tuple(s.shape)) for k, s in raw_spec.items()),
               self.jit_compile, corrected)
        if key not in self._round_fns:
            variable_specs = lambda vs: [tf.TensorSpec(v.shape, v.dtype) for v in vs]
            signature = [raw_spec, tf.TensorSpec([None, None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                         tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                         variable_specs(self.model.trainable_variables),
                         variable_specs(self.model.non_trainable_variables)]
            if corrected:  # SCAFFOLD's per-client corrections, [clients, ...] per trainable variable
                signature.append([tf.TensorSpec([None, *v.shape], v.dtype) for v in self.model.trainable_variables])
            # The map functions are already converted by AutoGraph; the rest of the round is, so that a
            # forward pass written with Python control flow works as in a tf.data loop.
            apply_map = tf.autograph.experimental.do_not_convert(fast._vectorized(layout.map_fns))
            full_batches = tf.function(self._full_batches, jit_compile=self.jit_compile)

            def laid_out_round(raw, index, sizes, steps, runs, trainable, non_trainable, corrections=None):
                return self._clients_in_turn(apply_map(raw), index, sizes, steps, runs, trainable, non_trainable,
                                             full_batches, corrections)

            self._round_fns[key] = tf.function(laid_out_round, input_signature=signature)
        return self._round_fns[key]

    def _clients_in_turn(self, examples, index, sizes, steps, runs, trainable, non_trainable, full_batches,
                         corrections=None):
        """Every client, in turn, trains from the given weights on its rows of ``examples``.

        A run of full batches (``runs[c, t]``: where the run starting at step ``t`` ends) goes through
        ``full_batches`` in one call, XLA-compiled for the batch shape; a shorter batch is one step on its
        own. Client ``c``'s gradients get ``corrections[k][c]`` (SCAFFOLD) where given. Returns the clients'
        weights, local outputs and example counts, stacked."""
        self.trace_count += 1
        model = self.model
        fields = list(model.input_spec)
        clients = tf.shape(index)[0]

        def client(c, tv_out, ntv_out, report_out, counts):
            self._start_client(trainable, non_trainable)
            rows = index[c]
            correction = None if corrections is None else [k[c] for k in corrections]

            def run_or_step(t, n):
                end = runs[c, t]
                return tf.cond(
                    end > t,
                    lambda: (end, n + full_batches(examples, rows, t, end, trainable, correction)),
                    lambda: (t + 1, n + self._train_step(
                        {k: tf.gather(examples[k], rows[t, :sizes[c, t]]) for k in fields}, trainable, correction)))

            _, n = tf.while_loop(lambda t, n: t < steps[c], run_or_step, (tf.constant(0), tf.constant(0, tf.int64)))
            with tf.control_dependencies([n]):
                report = tf.nest.flatten(model.report_local_outputs())
                write = lambda arrays, values: [a.write(c, tf.identity(v)) for a, v in zip(arrays, values)]
                return (c + 1, write(tv_out, model.trainable_variables), write(ntv_out, model.non_trainable_variables),
                        write(report_out, report), counts.write(c, n))

        stacks = lambda values: [tf.TensorArray(v.dtype, size=clients, element_shape=v.shape) for v in values]
        self._report_structure = _traced_report(model)
        report = [tf.convert_to_tensor(v) for v in tf.nest.flatten(self._report_structure)]
        outputs = (stacks(model.trainable_variables), stacks(model.non_trainable_variables), stacks(report),
                   tf.TensorArray(tf.int64, size=clients))
        _, tv, ntv, report, counts = tf.while_loop(lambda c, *_: c < clients, client, (tf.constant(0), *outputs))
        return [a.stack() for a in tv], [a.stack() for a in ntv], [a.stack() for a in report], counts.stack()

    def _full_batches(self, examples, rows, start, end, anchor, correction=None):
        """Train steps ``start..end-1`` of a client whose batches there are full (``rows``: ``[steps, batch]``)."""
        fields = list(self.model.input_spec)

        def step(t, n):
            return t + 1, n + self._train_step({k: tf.gather(examples[k], rows[t]) for k in fields}, anchor,
                                               correction)

        return tf.while_loop(lambda t, n: t < end, step, (start, tf.constant(0, tf.int64)))[1]

    def _start_client(self, trainable, non_trainable):
        """Loads the server's weights, fresh local variables and a fresh optimizer state (in the graph)."""
        model = self.model
        for v, w in zip(model.trainable_variables, trainable):
            v.assign(w)
        for v, w in zip(model.non_trainable_variables, non_trainable):
            v.assign(w)
        for v, w in zip(model.local_variables, self._initial_local):
            v.assign(w)
        for v, w in zip(self.optimizer.variables, self._initial_optimizer):
            v.assign(w)

    # -- the tf.data loops ----------------------------------------------------
    def _train_loop(self, dataset, correction=None):
        self.trace_count += 1
        n, steps = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
        for batch in dataset:
            n += self._train_step(batch, self._anchor, correction)
            steps += 1
        return n, steps

    def _train_step(self, batch, anchor, correction=None):
        """One step of the client optimizer; FedProx pulls towards ``anchor``, SCAFFOLD adds ``correction``.
        Returns the batch's examples."""
        variables = self.model.trainable_variables
        # A forward pass written as a tf.function is traced into this one: XLA takes the arguments of a
        # nested function for compile-time constants and would compile it again for every batch.
        forward_pass = getattr(self.model.forward_pass, "python_function", self.model.forward_pass)
        with tf.GradientTape() as tape:
            output = forward_pass(batch, training=True)
        grads = tape.gradient(output.loss, variables)
        if self.proximal_mu:
            grads = [g if g is None else g + self.proximal_mu * (v - a) for g, v, a in zip(grads, variables, anchor)]
        if correction is not None:
            grads = [g if g is None else g + c for g, c in zip(grads, correction)]
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return _batch_size(output, batch)

    def _evaluate_loop(self, dataset):
        self.trace_count += 1
        n = tf.constant(0, tf.int64)
        for batch in dataset:
            output = self.model.forward_pass(batch, training=False)
            n += _batch_size(output, batch)
        return n


_OPTIONS = tf.data.Options()
_OPTIONS.experimental_optimization.apply_default_optimizations = False

_SHUFFLES = ("ShuffleDataset", "ShuffleDatasetV2", "ShuffleDatasetV3")


def reseeded(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """``dataset`` with every ``shuffle`` in its pipeline seeded from ``seed`` (the k-th shuffle: ``(seed, k)``).

    The pipeline is serialized, its shuffle steps get the new seeds (keeping
    ``reshuffle_each_iteration``: a ``.shuffle(n).repeat(e)`` still draws a new
    order every epoch) and it is rebuilt. The same seed gives the same order,
    whatever seeds the shuffles had and whenever they were created.

    What stays outside the seed (and so may differ between two runs):

    * random operations inside ``map``/``filter``/... functions
      (``tf.random.uniform``, ``tf.image.random_flip_left_right``, ...): they keep
      the seeds they were given when the pipeline was built, which are fixed only
      if TensorFlow's global seed was set before (``keras.utils.set_random_seed``);
      stateless operations (``tf.random.stateless_uniform``) with your own seed
      always are;
    * ``tf.data.Dataset.random``, ``sample_from_datasets``, ``rejection_resample``
      and other random datasets without an explicit seed;
    * a parallel ``map`` or ``interleave`` with ``deterministic=False``, which
      may hand out elements in any order;
    * a pipeline with a kind of dataset that TensorFlow cannot serialize: it is
      used as it is, and its shuffles keep the seeds they had.

    Example:
        >>> ds = tf.data.Dataset.range(6).shuffle(6).batch(3)
        >>> order = lambda d: [b.numpy().tolist() for b in d]
        >>> order(reseeded(ds, 7)) == order(reseeded(ds, 7))
        True
    """
    # Variables, tables and generators that the pipeline uses stay where they are (this process): the
    # rebuilt pipeline refers to them, and so sees their current values.
    policy = tf.data.experimental.ExternalStatePolicy.WARN
    try:
        serialized = dataset._as_serialized_graph(external_state_policy=policy)
    except (tf.errors.FailedPreconditionError, tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return dataset  # a dataset kind without serialization: see the docstring
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(serialized.numpy())
    shuffles = [node for node in graph.node if node.op in _SHUFFLES]
    if not shuffles:
        return dataset
    for k, node in enumerate(shuffles):
        reshuffle = node.attr["reshuffle_each_iteration"].b if "reshuffle_each_iteration" in node.attr else True
        seeds = [_int64_constant(graph, f"fedteach_shuffle_{k}_seed{i}", s) for i, s in enumerate((seed, k))]
        inputs = list(node.input[:2]) + seeds + [i for i in node.input if i.startswith("^")]
        del node.input[:]
        node.input.extend(inputs)
        for name in [a for a in node.attr if a not in ("output_types", "output_shapes", "metadata")]:
            del node.attr[name]
        node.op = "ShuffleDataset"  # seeds as inputs; a new seed per epoch drawn from them when reshuffling
        node.attr["reshuffle_each_iteration"].b = reshuffle
    variant = tf.raw_ops.DatasetFromGraph(graph_def=graph.SerializeToString())
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


def _traced_report(model):
    """``model.report_local_outputs()`` inside a compiled function, or an error that says what it must be."""
    try:
        return model.report_local_outputs()
    except Exception as error:  # noqa: BLE001 -- any failure here is the same mistake, named below
        raise TypeError(
            f"{type(model).__name__}.report_local_outputs() could not run inside a compiled round ({error}). "
            "Build it from the local variables with TensorFlow operations and no NumPy or .numpy() calls, "
            "e.g. decorate it with @tf.function as the tutorial's MnistModel does.") from error


def _full_runs(sizes: np.ndarray, batch: int) -> np.ndarray:
    """For each client and step, the end of the run of full batches that starts there (the step itself if its
    batch is not full).

    Example:
        >>> _full_runs(np.array([[2, 2, 1, 2, 0]]), batch=2).tolist()
        [[2, 2, 2, 4, 4]]
    """
    runs = np.tile(np.arange(sizes.shape[1], dtype=np.int32), (sizes.shape[0], 1))
    for t in range(sizes.shape[1] - 1, -1, -1):
        full = sizes[:, t] == batch
        runs[full, t] = runs[full, t + 1] if t + 1 < sizes.shape[1] else t + 1
    return runs


def _int64_constant(graph, name: str, value: int) -> str:
    node = graph.node.add(name=name, op="Const")
    node.attr["dtype"].type = tf.int64.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value, tf.int64))
    return name


def _client_seed(seed: int, round_num: int, client: int) -> int:
    return int(np.random.default_rng([seed, round_num, client]).integers(1, 1 << 62))


def _as_tf_dataset(dataset):
    return dataset.to_tf_dataset() if isinstance(dataset, ClientDataset) else dataset


def _batch_size(output, batch):
    if output.num_examples is not None:
        return tf.cast(output.num_examples, tf.int64)
    return tf.cast(tf.shape(tf.nest.flatten(output.predictions)[0])[0], tf.int64)


def _names(model, kind: str) -> list[str]:
    names = getattr(model, f"{kind}_names", None)
    if names is not None:
        return names
    from fedteach.models.keras_model import variable_names
    return variable_names(getattr(model, f"{kind}_variables"))
