"""FedProx (Li et al., 2020): FedAvg whose clients stay close to the server model.

Each client minimises its loss plus ``mu/2 * ||w - w_global||**2``: every
local gradient gets ``mu * (w - w_global)``. On non-IID data this limits how
far clients drift towards their own labels during many local steps. It is
FedAvg with one piece changed, the client's gradient, and both engines run
it; ``build_fedprox_process`` is ``build_federated_averaging_process(...,
proximal_mu=mu)``.
"""
from __future__ import annotations

from fedteach.rounds.fedavg import build_federated_averaging_process

__all__ = ["build_fedprox_process"]


def build_fedprox_process(model_fn, client_optimizer_fn=None, server_optimizer_fn=None, *, mu: float, **kwargs):
    """Builds FedProx as an :class:`IterativeProcess` (same interface and types as FedAvg).

    Args:
        model_fn: a function that builds a new :class:`fedteach.Model`.
        client_optimizer_fn: as for :func:`build_federated_averaging_process`.
        server_optimizer_fn: as for :func:`build_federated_averaging_process`.
        mu: the proximal strength, >= 0 (Li et al. try 0.001 to 1; 0 is FedAvg);
            keyword-only, so that the positional arguments mean what they
            mean for every builder (``model_fn, client_optimizer_fn,
            server_optimizer_fn``).
        **kwargs: ``seed``, ``engine``, ``verbose``, ``aggregator``.

    Example:
        >>> import fedteach as ft, keras
        >>> train, _ = ft.load_offline_digits(num_clients=3, seed=0)
        >>> data = ft.make_federated_data(train, train.client_ids, ft.preprocess_for_tutorial(num_epochs=1))
        >>> def model_fn():
        ...     net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10, activation='softmax')])
        ...     net.compile(loss='sparse_categorical_crossentropy', optimizer=keras.optimizers.SGD(0.02))
        ...     return ft.from_compiled_keras_model(net, next(iter(data[0])))
        >>> process = build_fedprox_process(model_fn, mu=0.1)
        >>> state, metrics = process.next(process.initialize(), data)
        >>> process.path, state.round_num
        ('fast', 1)
    """
    return build_federated_averaging_process(model_fn, client_optimizer_fn, server_optimizer_fn,
                                             proximal_mu=mu, **kwargs)
