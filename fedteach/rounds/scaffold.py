"""SCAFFOLD (Karimireddy et al., 2020): FedAvg whose clients correct for their drift.

On non-IID data a client's many local steps follow its own gradient and
drift away from where the average would go. SCAFFOLD estimates that drift
with *control variates*: the server keeps ``c`` (an estimate of the average
gradient) and each client ``i`` its ``c_i`` (an estimate of its own). A local
step adds the difference to the client's gradient (Algorithm 1, option II)::

    y <- y - eta_l * (g_i(y) - c_i + c)                  K local steps from y = x
    c_i+ = c_i - c + (x - y_i) / (K * eta_l)             the client's new control variate
    x <- x + eta_g * mean_i(y_i - x)                     the server optimizer on the mean update
    c <- c + (|S| / N) * mean_i(c_i+ - c_i)              N: all clients, S: this round's

``K`` is the client's real number of local steps (its epochs x batches) and
``eta_l`` the client learning rate (plain SGD). The mean of the model updates
is the process's aggregator (by default FedAvg's example-weighted mean, which
is the paper's mean when clients hold the same number of examples); the
control variates are averaged uniformly, so that ``c`` stays the mean of all
``N`` clients' ``c_i``. Both engines run it: the correction ``c - c_i`` is a
per-client input of the compiled round, as FedProx's ``mu`` is.

The control variates live in the plain-data :class:`~fedteach.ScaffoldState`
(``state.control``, ``state.client_controls[client_id]``), which
``ft.save_checkpoint`` saves and restores. Clients are told apart by their
datasets' ``client_id`` (``ft.make_federated_data`` sets it).
"""
from __future__ import annotations

import collections

import keras
import numpy as np

from fedteach.federated.types import MappingType, StructType
from fedteach.rounds import fast, grouping
from fedteach.rounds.fedavg import FederatedAveraging, _skip_empty, build_client_optimizer, build_server
from fedteach.rounds.process import check_client_datasets, check_model_fn, client_name, seed_initial_weights
from fedteach.rounds.state import ModelWeights, ScaffoldState

__all__ = ["build_scaffold_process"]


def build_scaffold_process(model_fn, client_optimizer_fn=None, server_optimizer_fn=None, *, total_clients: int,
                           seed: int = 0, engine: str = "auto", verbose: bool = False, aggregator=None,
                           memory_budget_mb: float = grouping.DEFAULT_MEMORY_BUDGET_MB):
    """Builds SCAFFOLD (option II control variates) as an :class:`IterativeProcess`.

    Args:
        model_fn: a function that builds a new :class:`fedteach.Model`.
        client_optimizer_fn: returns plain SGD (no momentum) for the local
            steps; default: the compiled optimizer of a compiled Keras model.
        server_optimizer_fn: returns the optimizer that applies the mean
            update; default ``SGD(learning_rate=1.0)`` (the paper's ``eta_g = 1``).
        total_clients: ``N``, the number of clients in the population (e.g.
            ``len(train.client_ids)``): the server's control variate moves by
            ``1/N`` of the round's control-variate changes.
        seed: fixes the initial weights and the shuffling, as for FedAvg.
        engine: ``'auto'``, ``'fast'`` or ``'general'``, as for FedAvg.
        verbose: print which engine each round took.
        aggregator: an ``ft.aggregators`` Aggregator for the model updates
            (default: the example-weighted mean).
        memory_budget_mb: as for FedAvg: a fast round whose examples and
            client models would need more is trained in groups of clients.

    ``initialize()`` returns a :class:`~fedteach.ScaffoldState` whose
    control variates start at zero; ``next`` takes client datasets that know
    their ``client_id``.

    Example:
        >>> import fedteach as ft, keras
        >>> train, _ = ft.load_offline_digits(num_clients=3, seed=0)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02))
        ...     return ft.from_compiled_keras_model(net, next(iter(data[0])))
        >>> process = ft.build_scaffold_process(model_fn, total_clients=len(train.client_ids))
        >>> state, metrics = process.next(process.initialize(), data)
        >>> process.path, state.round_num, sorted(state.client_controls) == sorted(train.client_ids)
        ('fast', 1, True)
    """
    if engine not in ("auto", "fast", "general"):
        raise ValueError(f"engine must be 'auto', 'fast' or 'general', got {engine!r}")
    if isinstance(total_clients, bool) or not isinstance(total_clients, (int, np.integer)) or total_clients < 1:
        raise ValueError(f"total_clients must be the number of clients in the population (an int >= 1), got "
                         f"{total_clients!r}; e.g. total_clients=len(train.client_ids).")
    seed_initial_weights(seed)
    model = check_model_fn(model_fn)
    client_optimizer = build_client_optimizer(client_optimizer_fn, model)
    _check_plain_sgd(client_optimizer)
    server = build_server(server_optimizer_fn, model, default_learning_rate=1.0)
    return Scaffold(model, client_optimizer, server, total_clients=int(total_clients), seed=seed, engine=engine,
                    verbose=verbose, aggregator=aggregator, memory_budget_mb=memory_budget_mb).process


def _check_plain_sgd(optimizer) -> None:
    """SCAFFOLD's option II turns the local steps into a gradient estimate: it needs ``y <- y - lr * g``."""
    if type(optimizer) is not keras.optimizers.SGD or optimizer.momentum or optimizer.nesterov or not isinstance(
            optimizer.get_config()["learning_rate"], (float, int)):
        raise ValueError(f"SCAFFOLD's clients take plain SGD steps (its control variate divides the local change "
                         f"by K * learning rate), got {type(optimizer).__name__} "
                         f"{ {k: v for k, v in optimizer.get_config().items() if k in ('momentum', 'nesterov')} }. "
                         "Use client_optimizer_fn=lambda: keras.optimizers.SGD(learning_rate=0.02).")


def client_ids(federated_data) -> list:
    """The round's client ids, read from the datasets (each must know its own, and appear once).

    Example:
        >>> import fedteach as ft
        >>> train, _ = ft.load_offline_digits(num_clients=2, seed=0)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1))
        >>> client_ids(data) == train.client_ids
        True
        >>> client_ids([data[0], data[0]])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: SCAFFOLD keeps one control variate per client, but client '...' appears twice in this round...
    """
    ids = []
    for index, dataset in enumerate(federated_data):
        client_id = getattr(dataset, "client_id", None)
        if client_id is None:
            raise ValueError(
                f"SCAFFOLD keeps one control variate per client, keyed by client id, but client "
                f"{client_name(dataset, index)} has a dataset without a client_id (a {type(dataset).__name__}). "
                "Build the round's data with ft.make_federated_data(client_data, client_ids, preprocess) or "
                "client_data.create_tf_dataset_for_client(id), which remember the id, or set "
                "dataset.client_id = '<id>' on a dataset you built yourself.")
        if client_id in ids:
            raise ValueError(f"SCAFFOLD keeps one control variate per client, but client {client_id!r} appears "
                             "twice in this round. Sample distinct clients (e.g. ft.sample_clients).")
        ids.append(client_id)
    return ids


class Scaffold(FederatedAveraging):
    """The engine behind :func:`build_scaffold_process`: FedAvg's, with corrected local steps and the control
    variates updated after each round."""

    def __init__(self, model, client_optimizer, server, *, total_clients: int, **kwargs):
        self.total_clients = total_clients
        self.client_learning_rate = np.float32(client_optimizer.learning_rate.numpy())
        self._corrections = None  # the round's c - c_i, one array [clients, ...] per trainable variable
        self._local = None  # the round's (clients' trainable weights stacked, their local steps K)
        super().__init__(model, client_optimizer, server, **kwargs)

    def initialize(self) -> ScaffoldState:
        state = super().initialize()
        zeros = collections.OrderedDict((k, np.zeros_like(v)) for k, v in state.model.trainable.items())
        return ScaffoldState(state.model, state.optimizer_state, zeros, collections.OrderedDict())

    def state_member_type(self):
        """The state's type with ``client_controls`` as what it is: a table of control variates by client id
        (``{string:<...>}``), empty at first."""
        state = super().state_member_type()
        return StructType([(name, MappingType(str, state["control"]) if name == "client_controls" else member)
                           for name, member in state], container=state.container)

    def next(self, state: ScaffoldState, federated_data):
        if not isinstance(state, ScaffoldState):
            raise TypeError(f"SCAFFOLD's next() expects the ScaffoldState returned by its initialize() or next() "
                            f"(it holds the control variates), got {type(state).__name__}. A FedAvg state or "
                            "checkpoint has none: start from process.initialize().")
        federated_data = list(federated_data)
        ids = client_ids(federated_data)
        if len(ids) > self.total_clients:
            raise ValueError(f"round {state.round_num + 1} has {len(ids)} clients but the process was built with "
                             f"total_clients={self.total_clients}, the whole population. Build it with "
                             "total_clients=len(train.client_ids).")
        names = list(state.model.trainable)
        if list(state.control) != names:
            raise ValueError(f"this state's control variate has variables {list(state.control)} but the model has "
                             f"{names}: it belongs to another model. Start from process.initialize().")
        control = list(state.control.values())
        zero = [np.zeros_like(c) for c in control]  # a client never seen has c_i = 0
        mine = [list(state.client_controls[i].values()) if i in state.client_controls else zero for i in ids]
        self._corrections = [np.stack([c - m[k] for m in mine]) for k, c in enumerate(control)]
        new_state, metrics = super().next(state, federated_data)  # a diverging round raises here: nothing changes
        control, client_controls = self._new_controls(state, ids, mine)
        return ScaffoldState(new_state.model, new_state.optimizer_state, control, client_controls), metrics

    def _new_controls(self, state: ScaffoldState, ids: list, mine: list):
        """Option II after the round: each client's ``c_i+ = c_i - c + (x - y_i) / (K eta_l)``, and
        ``c + (1/N) sum_i (c_i+ - c_i)``."""
        clients, steps = self._local
        names, control = list(state.control), list(state.control.values())
        x = list(state.model.trainable.values())
        client_controls = collections.OrderedDict(state.client_controls)
        change = [np.zeros_like(c) for c in control]
        for i, client_id in enumerate(ids):
            if steps[i] == 0:
                continue  # no local step: its control variate stays as it was
            scale = np.float32(1.0) / (np.float32(steps[i]) * self.client_learning_rate)
            new = [m - c + (w - y[i]) * scale for m, c, w, y in zip(mine[i], control, x, clients)]
            change = [a + n - m for a, n, m in zip(change, new, mine[i])]
            client_controls[client_id] = collections.OrderedDict(zip(names, new))
        n = np.float32(self.total_clients)
        return collections.OrderedDict((k, c + a / n) for k, c, a in zip(names, control, change)), client_controls

    def _fast_round(self, state, federated_data, round_num):
        if not any(fast._num_rows(ds) for ds in federated_data):  # before any work: raises
            _skip_empty([0] * len(federated_data), federated_data, round_num)
        trained, num_examples, local_steps = grouping.train(
            self.trainer, self.layouter, federated_data, np.random.default_rng([self.seed, round_num]),
            list(state.model.trainable.values()), list(state.model.non_trainable.values()), True,
            self.memory_budget_mb * 2**20, corrections=self._corrections)
        _skip_empty(num_examples, federated_data, round_num)
        if not self.layouter.labels_in_range(trained.label_range):
            check_client_datasets(self.model, federated_data, check_specs=False)  # names the raw field if it can
            self.layouter.check_labels(federated_data)
        self._local = (trained.clients, local_steps)
        self._clients = (trained.clients, num_examples)
        average = ModelWeights(collections.OrderedDict(zip(state.model.trainable, trained.trainable)),
                               collections.OrderedDict(zip(state.model.non_trainable, trained.non_trainable)))
        return average, [o for o, n in zip(trained.outputs, num_examples) if n > 0]

    def _general_round(self, state, federated_data, round_num):
        results = self.runner.train_round(state.model, federated_data, self.seed, round_num,
                                          corrections=self._corrections)
        counts = np.array([n for _, n, _ in results], np.int64)
        _skip_empty(counts, federated_data, round_num)
        trained = [w for w, _, _ in results]
        clients = [np.stack([w.trainable[k] for w in trained]) for k in state.model.trainable]
        self._local = (clients, self.runner.local_steps)
        self._clients = (clients, counts)
        share = counts / counts.sum()
        average = lambda part: collections.OrderedDict(
            (k, sum(s * getattr(w, part)[k] for s, w in zip(share, trained)).astype(v.dtype))
            for k, v in getattr(state.model, part).items())
        return ModelWeights(average("trainable"), average("non_trainable")), [o for (_, n, o) in results if n > 0]
