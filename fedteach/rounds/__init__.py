"""Rounds: Federated Averaging, its engines, client sampling, plain-data state."""
from fedteach.rounds.fedavg import DivergenceError, build_federated_averaging_process
from fedteach.rounds.fedprox import build_fedprox_process
from fedteach.rounds.fedsgd import build_federated_sgd_process
from fedteach.rounds.process import Computation, IterativeProcess
from fedteach.rounds.sampling import sample_clients
from fedteach.rounds.scaffold import build_scaffold_process
from fedteach.rounds.state import ModelWeights, RoundMetrics, ScaffoldState, ServerState

__all__ = ["Computation", "DivergenceError", "IterativeProcess", "ModelWeights", "RoundMetrics", "ServerState",
           "build_federated_averaging_process", "build_fedprox_process", "build_federated_sgd_process",
           "build_scaffold_process", "ScaffoldState",
           "sample_clients"]
