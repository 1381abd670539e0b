"""fedteach: federated learning for the classroom, on TensorFlow 2 / Keras 3.

``import fedteach as ft`` gives every name a notebook needs, with the
tutorial's vocabulary: ``ft.ClientData``, ``ft.federated_computation``,
``ft.build_federated_averaging_process``, ``ft.build_federated_evaluation``...
"""
import logging as _logging
import os as _os
import sys as _sys
import tempfile as _tempfile

# Quiet TensorFlow's start-up chatter in notebooks (when fedteach is imported first: TensorFlow reads
# it when it is imported; `fedteach lab` sets it for every kernel). oneDNN's kernels stay as TensorFlow
# starts them (on, on x86), whatever is imported first: the same numbers in either order, and CNN
# rounds 1.5-2.2x faster than with them off (see the README).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TensorFlow 2.21 announces oneDNN when it loads, before its log level applies (absl's pre-init logging).
_CHATTER = ("All log messages before absl::InitializeLog() is called are written to STDERR",
            "oneDNN custom operations are on.")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow and Keras with the process's stderr caught; passes on every line but the chatter."""
    if "tensorflow" in _sys.modules:
        return
    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 to catch: import as it is
        import keras  # noqa: F401
        return
    with _tempfile.TemporaryFile() as caught:
        _os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports TensorFlow)
        finally:
            _os.dup2(saved, 2)
            _os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            _sys.stderr.write("".join(line for line in lines if not any(c in line for c in _CHATTER)))


_import_tensorflow_quietly()

from fedteach import data, federated, models, rounds  # noqa: E402
from fedteach import aggregators, optimizers, personalization, widgets  # noqa: E402
from fedteach import drift  # noqa: E402
from fedteach import leakage, secure_aggregation  # noqa: E402
from fedteach import attacks, robust  # noqa: E402
from fedteach.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from fedteach.data import *  # noqa: E402,F401,F403
from fedteach.personalization import evaluate_personalization  # noqa: E402
from fedteach.evaluation import assign_weights_to_keras_model, build_federated_evaluation  # noqa: E402
from fedteach.experiment import Experiment, ExperimentConfig  # noqa: E402
from fedteach.plots import (accuracy_ylim, plot_batch, plot_convergence, plot_federated_round, plot_label_distribution,  # noqa: E402
                            plot_label_heatmap, plot_label_histogram, plot_partition_comparison, plot_samples)
from fedteach.federated import *  # noqa: E402,F401,F403
from fedteach.models import *  # noqa: E402,F401,F403
from fedteach.rounds import *  # noqa: E402,F401,F403


class _HideRetracingWarnings(_logging.Filter):
    """Every new process compiles its own round function; TensorFlow calls that "excessive retracing"."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_logging.getLogger("tensorflow").addFilter(_HideRetracingWarnings())

__version__ = "0.1.0"
__all__ = (data.__all__ + federated.__all__ + models.__all__ + rounds.__all__
           + ["assign_weights_to_keras_model", "build_federated_evaluation",
              "CheckpointError", "load_checkpoint", "save_checkpoint", "widgets",
              "aggregators", "drift", "optimizers", "personalization", "evaluate_personalization",
              "Experiment", "ExperimentConfig", "plot_convergence", "plot_label_distribution",
              "plot_label_heatmap", "plot_label_histogram", "plot_partition_comparison", "plot_samples",
              "plot_federated_round", "accuracy_ylim", "plot_batch", "leakage", "secure_aggregation",
              "attacks", "robust"])
