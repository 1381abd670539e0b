"""Rounds: Federated Averaging, its engines, client sampling, plain-data state."""
from fedteach.rounds.fedavg import DivergenceError, build_federated_averaging_process
from fedteach.rounds.process import Computation, IterativeProcess
from fedteach.rounds.sampling import sample_clients
from fedteach.rounds.state import ModelWeights, RoundMetrics, ServerState

__all__ = ["Computation", "DivergenceError", "IterativeProcess", "ModelWeights", "RoundMetrics", "ServerState",
           "build_federated_averaging_process", "sample_clients"]
