"""Client drift made visible: where the clients' models go, round by round.

On non-IID data with many local epochs, every client walks towards a model
of its own few labels; the server's average of those models lands somewhere
none of them aimed for (Karimireddy et al. 2020 call it *client drift*).
This module records, round by round, what a server can see (the clients'
models after local training) and draws it::

    train, test = ft.drift.non_iid_digits(num_clients=20, labels_per_client=2)
    data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=20))
    history = ft.drift.track(process, data, rounds=10, test_data=test_data)
    ft.drift.plot({'FedAvg': history})

Measured per round (:class:`DriftHistory`): the global model before and
after, every trained client's model, the distance of each client's model
from the global model it started at (its update norm), the *drift* (the mean
distance of the clients' models to their own mean), the accuracy of the new
global model on each client's data (fairness: how unequal it is) and, with
``test_data``, on the test data.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from matplotlib.ticker import MaxNLocator

from fedteach.data import ClientData, partition_shards
from fedteach.data.offline import load_offline_digits
from fedteach.plots import OKABE_ITO, Figure
from fedteach.rounds import fast
from fedteach.rounds.sampling import sample_clients

__all__ = ["DriftHistory", "non_iid_digits", "plot", "track"]

MAX_RECORDED_BYTES = 1 << 30
"""The most memory the recorded models of one :func:`track` may take (1 GiB)."""


def non_iid_digits(num_clients: int = 20, labels_per_client: int = 2, *, writers: int = 100,
                   seed: int = 0) -> tuple[ClientData, ClientData]:
    """The offline digits re-split so that each client holds only a few labels (where drift matters).

    The train examples of ``writers`` simulated writers are pooled, sorted by
    label and dealt out in ``labels_per_client`` shards per client (McMahan
    et al. 2017's pathological split, :func:`~fedteach.partition_shards`): a
    shard can straddle two labels, so a client of two shards holds two to
    four labels, most of its examples of two. The test examples of the same
    writers are one client, ``'test'``.

    Args:
        num_clients: clients to deal the examples to.
        labels_per_client: shards per client: about that many labels each.
        writers: writers of :func:`~fedteach.load_offline_digits` to pool
            (about 94 train and 31 test examples each).
        seed: seed of the writers and of the split.

    Returns:
        ``(train, test)`` ClientData with the EMNIST element structure.

    Example:
        >>> train, test = non_iid_digits(num_clients=10, writers=20)
        >>> [len(set(train.client_arrays(c)['label'])) for c in train.client_ids], test.client_ids
        ([3, 2, 4, 2, 2, 3, 4, 2, 3, 2], ['test'])
    """
    train, test = load_offline_digits(num_clients=writers, seed=seed, test_examples_per_client=30)
    pooled = lambda cd: {k: np.concatenate([cd.client_arrays(c)[k] for c in cd.client_ids])
                         for k in ("pixels", "label")}
    arrays = pooled(train)
    split = ClientData.from_partition(arrays, partition_shards(arrays["label"], num_clients, labels_per_client, seed))
    return split, ClientData.from_arrays({"test": pooled(test)})


@dataclasses.dataclass
class DriftHistory:
    """What :func:`track` recorded, one entry per round (plain NumPy data).

    Attributes:
        client_ids: per round, the ids of the clients that trained.
        global_models: ``[rounds + 1, parameters]``: the global model before
            round 1 and after every round, flattened.
        client_models: per round, ``[clients, parameters]``: each client's
            model after its local training.
        client_accuracy: per round, the new global model's accuracy on each
            client's own data (all clients of ``federated_data``).
        test_accuracy: per round, the new global model's accuracy on the
            test data (empty without ``test_data``).
        metrics: per round, the training metrics ``process.next`` returned.

    Example:
        >>> h = DriftHistory([['a', 'b']], np.zeros((2, 2)), [np.array([[1.0, 0.0], [-1.0, 0.0]])],
        ...                  [np.array([0.5, 1.0])], [0.75], [{}])
        >>> h.drift.tolist(), h.update_norms[0].tolist(), h.rounds_to(0.7)
        ([1.0], [1.0, 1.0], 1)
    """

    client_ids: list
    global_models: np.ndarray
    client_models: list
    client_accuracy: list
    test_accuracy: list
    metrics: list

    @property
    def update_norms(self) -> list:
        """Per round, each client's distance from the global model it started from, ``||y_i - x||``."""
        return [np.linalg.norm(c - g, axis=1) for c, g in zip(self.client_models, self.global_models)]

    @property
    def drift(self) -> np.ndarray:
        """Per round, the mean distance of the clients' models to their mean: how far apart the clients went."""
        return np.array([np.linalg.norm(c - c.mean(axis=0), axis=1).mean() for c in self.client_models])

    def rounds_to(self, target: float) -> int | None:
        """The first round whose test accuracy reaches ``target``, or None if none did."""
        return next((r + 1 for r, a in enumerate(self.test_accuracy) if a >= target), None)


def _flat(weights) -> np.ndarray:
    return np.concatenate([np.ravel(w) for w in weights.trainable.values()]).astype(np.float32)


def _accuracy_name(model) -> str:
    names = [m.name for m in getattr(model, "metrics", ()) if m.name.endswith("accuracy")]
    if not names:
        raise ValueError("ft.drift.track measures accuracy, but the process's model has no accuracy metric. "
                         "Compile the Keras model with metrics=[keras.metrics.SparseCategoricalAccuracy()].")
    return names[0]


def _accuracies(evaluator, name, weights, datasets) -> np.ndarray:
    outputs = evaluator.outputs(weights, datasets)
    return np.array([float(o[name][0]) / max(float(o[name][1]), 1.0) for o in outputs])


def track(process, federated_data, rounds: int, *, test_data=None, clients_per_round: int | None = None,
          seed: int = 0, state=None) -> DriftHistory:
    """Runs ``rounds`` rounds of ``process`` and records where the clients' models go.

    Args:
        process: a process from ``ft.build_federated_averaging_process``,
            ``ft.build_fedprox_process`` or ``ft.build_scaffold_process`` with a
            compiled Keras model that has an accuracy metric.
        federated_data: one dataset per client (``ft.make_federated_data``),
            the whole population.
        rounds: how many rounds to run.
        test_data: optional list of datasets to measure the global model's
            test accuracy on after every round.
        clients_per_round: clients sampled each round (``ft.sample_clients``,
            seeded by ``seed`` and the round); default: all of them.
        seed: seed of the client sampling.
        state: the state to start from; default ``process.initialize()``.

    Returns:
        A :class:`DriftHistory`.

    Example:
        >>> import fedteach as ft, keras
        >>> train, _ = ft.drift.non_iid_digits(num_clients=3, writers=6)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=2))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.05),
        ...                 metrics=[keras.metrics.SparseCategoricalAccuracy()])
        ...     return ft.from_compiled_keras_model(net, next(iter(data[0])))
        >>> history = ft.drift.track(ft.build_federated_averaging_process(model_fn), data, rounds=2)
        >>> history.global_models.shape, len(history.client_models), history.client_accuracy[0].shape
        ((3, 7850), 2, (3,))
    """
    engine = process._engine
    reason = fast.unsupported_model(engine.model)
    if reason is not None:
        raise ValueError(f"ft.drift.track evaluates with the fast engine's evaluator, which cannot serve this "
                         f"model: {reason}. Use a compiled Keras model (ft.from_compiled_keras_model).")
    name = _accuracy_name(engine.model)
    federated_data = list(federated_data)
    per_round = clients_per_round or len(federated_data)
    parameters = sum(int(np.prod(np.shape(w))) for w in engine.initial_weights.trainable.values())
    recorded = 4 * parameters * (rounds * (per_round + 1) + 1)
    if recorded > MAX_RECORDED_BYTES:
        raise ValueError(f"tracking {rounds} rounds of {per_round} clients of a model with {parameters:,} parameters "
                         f"would keep {recorded / 2**20:,.0f} MiB of models (at most {MAX_RECORDED_BYTES >> 20} MiB). "
                         "Track fewer rounds or clients per round, or a smaller model.")
    evaluator = fast.FastEvaluator(engine.model)
    kept = engine.keep_clients
    engine.keep_clients = True  # the engine keeps every round's client models (the update is computed as before)
    state = process.initialize() if state is None else state
    history = DriftHistory([], [_flat(state.model)], [], [], [], [])
    try:
        for _ in range(rounds):
            chosen = (sample_clients(list(range(len(federated_data))), per_round, state.round_num + 1, seed)
                      if clients_per_round else range(len(federated_data)))
            state, metrics = process.next(state, [federated_data[i] for i in chosen])
            history.client_ids.append([getattr(federated_data[i], "client_id", i) for i in chosen])
            history.client_models.append(np.concatenate(
                [np.reshape(c, (len(chosen), -1)) for c in engine._clients[0]], axis=1).astype(np.float32))
            history.global_models.append(_flat(state.model))
            history.client_accuracy.append(_accuracies(evaluator, name, state.model, federated_data))
            if test_data is not None:
                history.test_accuracy.append(float(np.mean(_accuracies(evaluator, name, state.model, test_data))))
            history.metrics.append(dict(metrics))
    finally:
        engine.keep_clients = kept
    history.global_models = np.stack(history.global_models)
    return history


def _projection(histories) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the top two principal directions of every model of ``histories`` (one frame for all).

    By randomized subspace iteration (Halko et al. 2011), seeded: a full SVD of thousands of models of thousands
    of parameters takes seconds, this a fraction of one, and agrees on the top directions.
    """
    points = np.concatenate([np.concatenate([h.global_models, *h.client_models]) for h in histories])
    mean = points.mean(axis=0)
    centered = (points - mean).astype(np.float64)
    basis = np.random.default_rng(0).normal(size=(centered.shape[1], min(10, *centered.shape)))
    for _ in range(6):
        basis, _ = np.linalg.qr(centered.T @ (centered @ basis))
    _, _, vt = np.linalg.svd(centered @ basis, full_matrices=False)
    return mean, vt[:2] @ basis.T


def plot(histories, *, fig=None, figsize=None) -> Figure:
    """Draws drift: per algorithm, where the clients' models go, how fair the global model is, the update norms.

    One row per history: (1) the models projected on their two principal
    directions (one frame for all rows): the global model's path (black,
    round by round) and, for every round, arrows from the global model to
    the clients' models after local training, coloured by round, and their
    mean (a cross); (2) the global model's accuracy on each client's data
    after each round (a dot per client over a box): the spread is how
    unequal it is; (3) the clients' update norms per round. With more than
    one history a last row compares them: drift (mean distance of the
    clients' models to their mean) and test accuracy per round.

    Args:
        histories: a :class:`DriftHistory`, or a dict ``{name: history}``.
        fig: a figure to draw into; default a new one.
        figsize: size of a new figure.

    Returns:
        The figure.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> h = DriftHistory([['a', 'b']] * 2, rng.normal(size=(3, 5)), [rng.normal(size=(2, 5))] * 2,
        ...                  [np.array([0.5, 0.7])] * 2, [0.6, 0.65], [{}, {}])
        >>> fig = plot({'FedAvg': h, 'SCAFFOLD': h})
        >>> len(fig.axes), fig.axes[0].get_title()
        (8, 'FedAvg: where the models go')
    """
    from matplotlib import colormaps

    if isinstance(histories, DriftHistory):
        histories = {"": histories}
    names = list(histories)
    compare = len(names) > 1
    rows = len(names) + compare
    fig = fig if fig is not None else Figure(figsize=figsize or (13, 3.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 6)
    mean, directions = _projection(histories.values())
    project = lambda points: (np.atleast_2d(points) - mean) @ directions.T
    first_map = None
    for row, (name, h) in enumerate(histories.items()):
        prefix = f"{name}: " if name else ""
        rounds = len(h.client_models)
        colors = colormaps["viridis"](np.linspace(0, 0.9, max(rounds, 1)))
        ax = fig.add_subplot(grid[row, 0:2], sharex=first_map, sharey=first_map)  # one frame, one scale
        first_map = first_map or ax
        path = project(h.global_models)
        for r, clients in enumerate(h.client_models):
            start, ends = path[r], project(clients)
            ax.quiver(*np.broadcast_to(start, ends.shape).T, *(ends - start).T, angles="xy", scale_units="xy", scale=1,
                      color=colors[r], alpha=0.6, width=0.002, headwidth=4, zorder=1)  # one artist for all arrows
            ax.scatter(*ends.T, s=10, color=colors[r], zorder=2)
            ax.scatter(*ends.mean(axis=0), marker="x", s=40, color=colors[r], zorder=3)
        ax.plot(*path.T, "-o", color="black", ms=3, lw=1.5, zorder=4, label="global model")
        ax.set_title(f"{prefix}where the models go")
        ax.set_xlabel("principal direction 1")
        ax.set_ylabel("principal direction 2")
        ax.legend(loc="best", fontsize="small")
        ax = fig.add_subplot(grid[row, 2:4])
        _strips(ax, h.client_accuracy, colors)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{prefix}global model's accuracy per client")
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy on the client's data")
        ax = fig.add_subplot(grid[row, 4:6])
        _strips(ax, h.update_norms, colors)
        ax.set_title(f"{prefix}clients' update norms")
        ax.set_xlabel("round")
        ax.set_ylabel("||client model - global model||")
    if compare:
        drift_ax, test_ax = fig.add_subplot(grid[rows - 1, 0:3]), fig.add_subplot(grid[rows - 1, 3:6])
        for color, (name, h) in zip(OKABE_ITO, histories.items()):
            rounds = np.arange(1, len(h.client_models) + 1)
            drift_ax.plot(rounds, h.drift, "-o", ms=3, color=color, label=name)
            if h.test_accuracy:
                test_ax.plot(rounds, h.test_accuracy, "-o", ms=3, color=color, label=name)
        drift_ax.set_title("drift: mean distance of the clients' models to their mean")
        test_ax.set_title("global model's test accuracy")
        for ax in (drift_ax, test_ax):
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds, not 2.5
            ax.legend(fontsize="small")
    return fig


def _strips(ax, values, colors) -> None:
    """A box per round with its clients' values as jittered dots over it."""
    rng = np.random.default_rng(0)
    positions = np.arange(1, len(values) + 1)
    ax.boxplot(values, positions=positions, widths=0.6, showfliers=False,
               medianprops=dict(color="black"), boxprops=dict(color="0.5"), whiskerprops=dict(color="0.5"),
               capprops=dict(color="0.5"))
    for p, v, color in zip(positions, values, colors):
        ax.scatter(p + rng.uniform(-0.2, 0.2, len(v)), v, s=8, color=color, alpha=0.8, zorder=3)
    step = max(1, len(values) // 10)
    ax.set_xticks(positions[::step])
    ax.set_xticklabels([str(p) for p in positions[::step]])
