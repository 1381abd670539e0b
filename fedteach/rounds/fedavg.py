"""Federated Averaging as an iterative process (McMahan et al., 2017).

A round: the server broadcasts its model; every client trains it on its own
data with the client optimizer; the server takes the average of the clients'
models weighted by the number of examples each trained on, and applies the
average update with the server optimizer (SGD with learning rate 1.0 simply
adopts the average).
"""
from __future__ import annotations

import collections
import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from fedteach import aggregators as _aggregators
from fedteach.rounds import fast, general, grouping
from fedteach.rounds.process import (Computation, IterativeProcess, aggregate_trusted, check_client_datasets,
                                     check_model_fn, check_positive, client_name, clients_data_type, function_type,
                                     is_finite, metrics_type, num_classes, seed_initial_weights, server_type)
from fedteach.rounds.state import ModelWeights, RoundMetrics, ServerState
from fedteach.federated import StructType, to_type


class DivergenceError(FloatingPointError):
    """A round produced NaN or Inf; the state passed to ``next`` is still good."""


class ServerOptimizer:
    """Applies the clients' average update with a Keras optimizer, as plain data in and out.

    Example:
        >>> import keras, numpy as np
        >>> w = ModelWeights.from_lists([np.zeros(2, np.float32)], [], ['b'])
        >>> server = ServerOptimizer(keras.optimizers.SGD(1.0), w)
        >>> new, state = server.apply(w, server.initial_state(), [np.array([0.5, -1.0], np.float32)])
        >>> new.trainable['b'].tolist(), int(state[0])
        ([0.5, -1.0], 1)
    """

    def __init__(self, optimizer, template: ModelWeights):
        self.optimizer = optimizer
        self._plain_sgd = _is_plain_sgd(optimizer)
        self._learning_rate = np.float32(optimizer.learning_rate.numpy())
        # The compiled step (and the initial state) is shared by every server optimizer of the same kind,
        # hyperparameters and weight shapes; the learning rate is set before each step, so a new rate costs
        # no compilation. It is compiled at its first call (plain SGD runs in NumPy).
        self._step, self._initial = _server_step(optimizer, template)

    def initial_state(self) -> tuple:
        return tuple(np.copy(s) for s in self._initial)

    def apply(self, weights: ModelWeights, state: tuple, update: list):
        """Moves ``weights`` by ``update`` (the average client change); returns (weights, state)."""
        if self._plain_sgd:  # FedAvg's default, in NumPy: the same float32 arithmetic as Keras' SGD step
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging round is reported by next()
                trainable = collections.OrderedDict(
                    (name, w - (-u) * self._learning_rate) for (name, w), u in zip(weights.trainable.items(), update))
            return ModelWeights(trainable, weights.non_trainable), (state[0] + 1,)
        new_weights, new_state = self._step(list(weights.trainable.values()), list(state), list(update),
                                            self._learning_rate)
        trainable = collections.OrderedDict((name, w.numpy()) for name, w in zip(weights.trainable, new_weights))
        return ModelWeights(trainable, weights.non_trainable), tuple(s.numpy() for s in new_state)


def _state_variables(optimizer) -> list:
    return [v for v in optimizer.variables if not v.path.endswith("learning_rate")]


_SERVER_STEPS = {}  # (optimizer kind, hyperparameters, weight shapes) -> (compiled server step, initial state)


def _server_step(optimizer, template: ModelWeights):
    """A compiled ``step(weights, state, update, learning_rate) -> (weights, state)``, one per kind of optimizer,
    and the optimizer's initial state for these weights.

    Optimizers of Keras and fedteach are described fully by their class and config (the learning rate
    aside, when it is a number); any other class gets its own step.
    """
    config = optimizer.get_config()
    rate_is_number = isinstance(config.get("learning_rate"), (float, int))
    known = type(optimizer).__module__.startswith(("keras.", "fedteach."))
    hyper = {k: v for k, v in config.items() if k != "name" and not (k == "learning_rate" and rate_is_number)}
    shapes = tuple((np.shape(w), np.asarray(w).dtype.str) for w in template.trainable.values())
    key = (type(optimizer), repr(sorted(hyper.items())), shapes) if known else (optimizer, shapes)
    if key not in _SERVER_STEPS:
        owner = type(optimizer).from_config(config) if known else optimizer
        variables = [tf.Variable(w) for w in template.trainable.values()]
        owner.build(variables)
        state_variables = _state_variables(owner)
        initial = tuple(v.numpy() for v in state_variables)

        def assign_and_apply(weights, state, update):
            for v, w in zip(variables, weights):
                v.assign(w)
            for v, s in zip(state_variables, state):
                v.assign(s)
            owner.apply_gradients(zip([-u for u in update], variables))
            return [tf.identity(v) for v in variables], [tf.identity(v) for v in state_variables]

        compiled = tf.function(assign_and_apply, autograph=False)  # Keras optimizers need no AutoGraph

        def step(weights, state, update, learning_rate):
            if rate_is_number:
                owner.learning_rate = float(learning_rate)  # assigns the optimizer's learning-rate variable
            return compiled(weights, state, update)

        _SERVER_STEPS[key] = step, initial
    return _SERVER_STEPS[key]


def _is_plain_sgd(optimizer) -> bool:
    """SGD without momentum, weight decay, clipping, EMA, accumulation or a schedule: ``w - lr * g``."""
    plain = {"weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
             "loss_scale_factor": None, "gradient_accumulation_steps": None, "momentum": 0.0, "nesterov": False}
    config = optimizer.get_config()
    return (type(optimizer) is keras.optimizers.SGD and isinstance(config["learning_rate"], float)
            and all(config[k] == v for k, v in plain.items()) and len(optimizer.variables) == 2)


def optimizer_from(fn, name: str, example: str):
    """Calls an ``*_optimizer_fn``; an optimizer passed instead of a function gets a message saying what to pass.

    Example:
        >>> optimizer_from(keras.optimizers.Adam(0.01), 'server_optimizer_fn', 'lambda: keras.optimizers.Adam(0.01)')
        Traceback (most recent call last):
        ...
        TypeError: server_optimizer_fn must be a function that returns a new optimizer (the process makes its own), got an Adam optimizer: write server_optimizer_fn=lambda: keras.optimizers.Adam(0.01)
    """
    if isinstance(fn, keras.optimizers.Optimizer) or not callable(fn):
        kind = f"an {type(fn).__name__} optimizer" if isinstance(fn, keras.optimizers.Optimizer) else repr(fn)
        raise TypeError(f"{name} must be a function that returns a new optimizer (the process makes its own), "
                        f"got {kind}: write {name}={example}")
    return fn()


def build_server(server_optimizer_fn, model, default_learning_rate: float) -> ServerOptimizer:
    """The server side of a process: ``server_optimizer_fn()`` (default plain SGD), checked."""
    optimizer = (optimizer_from(server_optimizer_fn, "server_optimizer_fn", "lambda: keras.optimizers.Adam(0.01)")
                 if server_optimizer_fn else keras.optimizers.SGD(default_learning_rate))
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"server_optimizer_fn must return a Keras optimizer, got {type(optimizer).__name__}")
    check_positive("server learning rate", optimizer.learning_rate,
                   f"e.g. server_optimizer_fn=lambda: keras.optimizers.SGD(learning_rate={default_learning_rate:g})")
    variables = model.trainable_variables
    template = ModelWeights.from_lists([np.zeros(v.shape, tf.as_dtype(v.dtype).as_numpy_dtype) for v in variables], [],
                                       [f"w{i}" for i in range(len(variables))])
    return ServerOptimizer(optimizer, template)  # the template's shapes and dtypes are what it needs


def build_client_optimizer(client_optimizer_fn, model):
    """The clients' Keras optimizer: ``client_optimizer_fn()``, else a copy of a compiled model's optimizer.

    Example:
        >>> import keras
        >>> build_client_optimizer(lambda: keras.optimizers.SGD(0.05), None).learning_rate.numpy()
        np.float32(0.05)
    """
    if client_optimizer_fn is not None:
        client_optimizer = optimizer_from(client_optimizer_fn, "client_optimizer_fn",
                                          "lambda: keras.optimizers.SGD(learning_rate=0.02)")
    elif getattr(model, "optimizer", None) is not None:
        client_optimizer = _copy_optimizer(model.optimizer)
    else:
        raise ValueError("no client optimizer: pass client_optimizer_fn (e.g. "
                         "`lambda: keras.optimizers.SGD(learning_rate=0.02)`), or use a compiled Keras model.")
    if not isinstance(client_optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"client_optimizer_fn must return a Keras optimizer, got {type(client_optimizer).__name__}")
    check_positive("client learning rate", client_optimizer.learning_rate,
                   "e.g. client_optimizer_fn=lambda: keras.optimizers.SGD(learning_rate=0.02)")
    return client_optimizer


def _copy_optimizer(optimizer):
    return optimizer.__class__.from_config(optimizer.get_config())


def build_federated_averaging_process(model_fn, client_optimizer_fn=None, server_optimizer_fn=None, *,
                                      seed: int = 0, engine: str = "auto", verbose: bool = False,
                                      proximal_mu: float = 0.0, aggregator=None,
                                      memory_budget_mb: float = grouping.DEFAULT_MEMORY_BUDGET_MB):
    """Builds Federated Averaging as an :class:`IterativeProcess`.

    Args:
        model_fn: a function that builds a new :class:`fedteach.Model` (not a model).
        client_optimizer_fn: returns the Keras optimizer for local training;
            default: the compiled optimizer of a compiled Keras model.
        server_optimizer_fn: returns the Keras optimizer that applies the
            average update on the server; default ``SGD(learning_rate=1.0)``.
        seed: fixes the initial weights and the shuffling of the fast engine.
        engine: ``'auto'`` (fast where possible), ``'fast'`` (error if not
            possible) or ``'general'``.
        verbose: print which engine each round took.
        proximal_mu: FedProx's ``mu`` (Li et al., 2020): each local gradient
            gets ``mu * (w - w_global)``, pulling clients towards the server
            model; 0 is FedAvg.
        aggregator: how the clients' updates are combined, an
            ``ft.aggregators`` Aggregator (clipping, DP, compression...);
            default: the example-weighted mean. Its measurements are added
            to the round's metrics.
        memory_budget_mb: the memory the fast engine's round may use for
            the clients' examples and models; a larger round runs its
            clients in groups that fit, with the same result (e.g. every
            client of federated EMNIST in a round; see
            :mod:`fedteach.rounds.grouping`).

    The process's ``path`` attribute says which engine the last round used
    and ``path_reason`` why.

    Example:
        >>> import fedteach as ft, keras
        >>> train, _ = ft.load_offline_digits(num_clients=3, seed=0)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax',
        ...                                                             kernel_initializer='zeros')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02),
        ...                 metrics=[keras.metrics.SparseCategoricalAccuracy()])
        ...     return ft.from_compiled_keras_model(net, next(iter(data[0])))
        >>> process = ft.build_federated_averaging_process(model_fn)
        >>> str(process.initialize.type_signature)
        '( -> <model=<trainable=<dense/kernel=float32[784,10],dense/bias=float32[10]>,non_trainable=<>>,optimizer_state=<int64>>@SERVER)'
        >>> state, metrics = process.next(process.initialize(), data)
        >>> process.path, sorted(metrics)
        ('fast', ['loss', 'num_examples', 'sparse_categorical_accuracy'])
    """
    if engine not in ("auto", "fast", "general"):
        raise ValueError(f"engine must be 'auto', 'fast' or 'general', got {engine!r}")
    seed_initial_weights(seed)
    model = check_model_fn(model_fn)
    client_optimizer = build_client_optimizer(client_optimizer_fn, model)
    server = build_server(server_optimizer_fn, model, default_learning_rate=1.0)
    return FederatedAveraging(model, client_optimizer, server, seed=seed, engine=engine, verbose=verbose,
                              proximal_mu=proximal_mu, aggregator=aggregator,
                              memory_budget_mb=memory_budget_mb).process


class FederatedAveraging:
    """The engine behind :func:`build_federated_averaging_process`."""

    def __init__(self, model, client_optimizer, server: ServerOptimizer, *, seed, engine, verbose,
                 proximal_mu: float = 0.0, aggregator=None,
                 memory_budget_mb: float = grouping.DEFAULT_MEMORY_BUDGET_MB):
        check_positive("memory_budget_mb", memory_budget_mb, "e.g. memory_budget_mb=256")
        self.memory_budget_mb = float(memory_budget_mb)
        self.model, self.server, self.seed, self.engine, self.verbose = model, server, seed, engine, verbose
        if not proximal_mu >= 0:
            raise ValueError(f"proximal_mu must be >= 0 (0 is FedAvg; FedProx uses e.g. 0.01), got {proximal_mu!r}.")
        self.proximal_mu = float(proximal_mu)
        self.aggregator = _aggregators.resolve(aggregator)
        self._clients = None  # the last round's (stacked client weights, counts), when the aggregator needs them
        self.keep_clients = False  # keep them in every round anyway (ft.drift.track reads them)
        self.runner = general.ClientRunner(model, client_optimizer, proximal_mu=self.proximal_mu)
        self.initial_weights = self.runner.weights()
        self.model_reason = fast.unsupported_model(model, client_optimizer)
        if self.model_reason is None:
            # 1,024 rows at least: rounds of a few small clients share one shape, hence one XLA compilation (the
            # map also runs on the padding rows, a reshape for the tutorial's; training sees only indexed rows)
            self.layouter = fast.Layouter(model.input_spec, num_classes=num_classes(model), min_rows=1024,
                                          reuse_memory=True)  # its layouts are used within their round
            self.trainer = fast.FastTrainer(model, client_optimizer.learning_rate.numpy(), self.proximal_mu)
        elif engine == "fast":
            raise ValueError(f"engine='fast' is not possible: {self.model_reason}")
        self.path, self.path_reason = None, None
        state_type = server_type(self.state_member_type())
        outputs = self.runner.model.report_local_outputs()
        self.metrics_type = _aggregators.metrics_type_with(metrics_type(model, outputs), self.aggregator)
        self.process = FederatedAveragingProcess(
            Computation(self.initialize, function_type([], state_type), "initialize"),
            Computation(self.next, function_type([state_type, clients_data_type(model)],
                                                 StructType([(None, state_type), (None, self.metrics_type)])),
                        "next"),
            self)

    def initialize(self) -> ServerState:
        return ServerState(self.initial_weights.map(np.copy), self.server.initial_state())

    def state_member_type(self):
        """The server state's type (without its placement) in the type signatures: the initial state's."""
        return to_type(self.initialize())

    def choose_path(self, federated_data) -> tuple[str, str]:
        if self.engine == "general":
            return "general", "engine='general' was asked for"
        reason = self.model_reason or next(
            (r for r in map(fast.unsupported_pipeline, federated_data) if r is not None), None)
        if reason is None:
            return "fast", "Keras model, SGD and tutorial-style client datasets"
        if self.engine == "fast":
            raise ValueError(f"engine='fast' is not possible for this round: {reason}")
        return "general", reason

    def next(self, state: ServerState, federated_data):
        _check_state(state, self.initial_weights, self.server._initial)
        federated_data = list(federated_data)
        if not federated_data:
            raise ValueError("a round needs at least one client: federated_data is empty. "
                             "Pass a list with one dataset per client, e.g. ft.make_federated_data(...).")
        round_num = state.round_num + 1
        self.path, self.path_reason = self.choose_path(federated_data)
        # The fast engine checks fields, shapes and labels on the mapped examples itself.
        general_path = self.path == "general"
        check_client_datasets(self.model, federated_data, check_labels=general_path,
                              check_specs=general_path and not self.runner.lays_out(federated_data))
        if self.verbose:
            print(f"round {round_num}: {self.path} path ({self.path_reason})")
        if self.path == "fast":
            average, outputs = self._fast_round(state, federated_data, round_num)
            if not self.trainer.jit_compile:
                self.path_reason = (
                    f"{self.path_reason}; the round runs as a plain TensorFlow graph, not XLA-compiled: "
                    f"{self.trainer.xla_error}")
        else:
            average, outputs = self._general_round(state, federated_data, round_num)
        update = [a - w for a, w in zip(average.trainable.values(), state.model.trainable.values())]
        measurements = {}
        if self.aggregator.needs_clients:  # the aggregator replaces the weighted mean of the clients' updates
            update, measurements = _aggregators.client_updates(
                *self._clients[:1], list(state.model.trainable.values()), self._clients[1], round_num, self.seed,
                self.aggregator)
        weights, optimizer_state = self.server.apply(state.model, state.optimizer_state, update)
        weights = ModelWeights(weights.trainable, average.non_trainable)
        aggregate = self.model.federated_output_computation
        if self.path == "fast":  # the fast engine builds its outputs in the type the aggregation is bound to
            metrics = RoundMetrics({**aggregate_trusted(aggregate, outputs), **measurements})
        else:
            metrics = RoundMetrics({**aggregate(outputs), **measurements})
        if not is_finite(list(weights.trainable.values()) + [metrics.get("loss", 0.0)]):
            raise DivergenceError(
                f"round {round_num} diverged: the model weights or the loss became NaN/Inf. "
                "Try a smaller client or server learning rate. The state you passed to next() "
                f"(after round {round_num - 1}) is unchanged and still usable.")
        return ServerState(weights, optimizer_state), metrics

    def _fast_round(self, state, federated_data, round_num):
        if not any(fast._num_rows(ds) for ds in federated_data):  # before any work: raises
            _skip_empty([0] * len(federated_data), federated_data, round_num)
        trained, num_examples, _ = grouping.train(
            self.trainer, self.layouter, federated_data, np.random.default_rng([self.seed, round_num]),
            list(state.model.trainable.values()), list(state.model.non_trainable.values()),
            self.aggregator.needs_clients or self.keep_clients, self.memory_budget_mb * 2**20)
        _skip_empty(num_examples, federated_data, round_num)
        if not self.layouter.labels_in_range(trained.label_range):
            check_client_datasets(self.model, federated_data, check_specs=False)  # names the raw field if it can
            self.layouter.check_labels(federated_data)
        self._clients = (trained.clients, num_examples) if trained.clients is not None else None
        tv, ntv, outputs = trained.trainable, trained.non_trainable, trained.outputs
        names = state.model
        average = ModelWeights(collections.OrderedDict(zip(names.trainable, tv)),
                               collections.OrderedDict(zip(names.non_trainable, ntv)))
        return average, [o for o, n in zip(outputs, num_examples) if n > 0]

    def _general_round(self, state, federated_data, round_num):
        results = self.runner.train_round(state.model, federated_data, self.seed, round_num)
        counts = np.array([n for _, n, _ in results], np.int64)
        _skip_empty(counts, federated_data, round_num)
        share = counts / counts.sum()
        trained = [w for w, _, _ in results]
        if self.aggregator.needs_clients or self.keep_clients:
            self._clients = ([np.stack([w.trainable[k] for w in trained]) for k in state.model.trainable], counts)
        average = ModelWeights(
            collections.OrderedDict((k, sum(s * w.trainable[k] for s, w in zip(share, trained)).astype(v.dtype))
                                    for k, v in state.model.trainable.items()),
            collections.OrderedDict((k, sum(s * w.non_trainable[k] for s, w in zip(share, trained)).astype(v.dtype))
                                    for k, v in state.model.non_trainable.items()))
        return average, [o for (_, n, o) in results if n > 0]


@dataclasses.dataclass(frozen=True)
class FederatedAveragingProcess(IterativeProcess):
    """An IterativeProcess that also tells which engine ran the last round."""

    _engine: FederatedAveraging = dataclasses.field(repr=False)

    @property
    def path(self) -> str | None:
        """'fast' or 'general': the engine the last round took (None before the first round)."""
        return self._engine.path

    @property
    def path_reason(self) -> str | None:
        """A sentence saying why the last round took that engine, and whether the fast engine fell back from
        XLA to a plain TensorFlow graph (and why); None before the first round."""
        return self._engine.path_reason

    @property
    def trace_count(self) -> int:
        """How many times the compiled round functions were traced (both engines)."""
        fast_traces = getattr(getattr(self._engine, "trainer", None), "trace_count", 0)
        return fast_traces + self._engine.runner.trace_count


def _skip_empty(counts, federated_data, round_num):
    empty = [client_name(d, i) for i, (d, n) in enumerate(zip(federated_data, counts)) if n == 0]
    if len(empty) == len(counts):
        raise ValueError(f"round {round_num}: every client's dataset is empty, nothing to train on. "
                         "Check the client ids and the preprocess function (e.g. batch with drop_remainder).")
    if empty:
        warnings.warn(f"round {round_num}: skipped {len(empty)} client(s) with no examples: {', '.join(empty)}. "
                      "The round goes on with the other clients.", stacklevel=3)


def _check_state(state, template: ModelWeights, optimizer_template: tuple = None):
    if not isinstance(state, ServerState):
        raise TypeError(f"next() expects the ServerState returned by initialize() or next(), got "
                        f"{type(state).__name__}. Usage: state, metrics = process.next(state, federated_data)")
    if list(state.model.trainable) != list(template.trainable) or any(
            np.shape(a) != np.shape(b) for a, b in zip(state.model.trainable.values(), template.trainable.values())):
        raise ValueError("this state belongs to a different model: its weights are "
                         f"{ {k: np.shape(v) for k, v in state.model.trainable.items()} } but the process's model has "
                         f"{ {k: np.shape(v) for k, v in template.trainable.items()} }.")
    if optimizer_template is not None and [np.shape(s) for s in state.optimizer_state] != [
            np.shape(s) for s in optimizer_template]:
        raise ValueError("this state belongs to a different server optimizer: its optimizer_state holds "
                         f"{len(state.optimizer_state)} arrays of shapes {[np.shape(s) for s in state.optimizer_state]} "
                         f"but the process's server optimizer keeps {[np.shape(s) for s in optimizer_template]}. "
                         "Continue with a process built with the same server_optimizer_fn.")
