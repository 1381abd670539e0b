"""fedteach: federated learning for the classroom, on TensorFlow 2 / Keras 3.

``import fedteach as ft`` gives every name a notebook needs, with the
tutorial's vocabulary: ``ft.ClientData``, ``ft.federated_computation``,
``ft.build_federated_averaging_process``, ``ft.build_federated_evaluation``...
"""
import logging as _logging
import os as _os
import sys as _sys
import warnings as _warnings

# Quiet TensorFlow's start-up chatter in notebooks (when fedteach is imported first). oneDNN's
# custom kernels are left off: they reorder float sums, and a course wants repeatable numbers.
# TensorFlow reads both variables when it is imported: after `import tensorflow` (or keras) they
# come too late, hence the warning below; `fedteach lab`, run.sh and test.sh set them for every kernel.
_TENSORFLOW_FIRST = "tensorflow" in _sys.modules
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

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


def _onednn_on() -> bool:
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # a TensorFlow without this probe: nothing to say
        return False


if _TENSORFLOW_FIRST and _onednn_on():
    _warnings.warn(
        "TensorFlow was imported before fedteach, with oneDNN's custom operations on: metrics may differ in their "
        "last digits from a run that imports fedteach first (oneDNN reorders float sums). Import fedteach first "
        "(restart the kernel), or set TF_ENABLE_ONEDNN_OPTS=0 before Python starts.", stacklevel=2)

__version__ = "0.1.0"
__all__ = (data.__all__ + federated.__all__ + models.__all__ + rounds.__all__
           + ["assign_weights_to_keras_model", "build_federated_evaluation",
              "CheckpointError", "load_checkpoint", "save_checkpoint", "widgets",
              "aggregators", "drift", "optimizers", "personalization", "evaluate_personalization",
              "Experiment", "ExperimentConfig", "plot_convergence", "plot_label_distribution",
              "plot_label_heatmap", "plot_label_histogram", "plot_partition_comparison", "plot_samples",
              "plot_federated_round", "accuracy_ylim", "plot_batch", "leakage", "secure_aggregation",
              "attacks", "robust"])
