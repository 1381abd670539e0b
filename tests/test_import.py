"""Importing fedteach: TensorFlow starts quiet, and the import order does not change a single number."""
import os
import subprocess
import sys

import pytest

# A CNN round (convolutions are where oneDNN's kernels differ from TensorFlow's own) and its metrics to the bit.
CNN_ROUND = """
import fedteach as ft, numpy as np
train, test = ft.load_offline_digits()
exp = ft.Experiment(train, test, ft.ExperimentConfig(model='cnn', clients_per_round=2, local_epochs=1))
metrics = exp.run_round(evaluate=True)
print(repr([metrics[k] for k in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy')]))
print(repr([float(np.sum(w.astype(np.float64))) for w in exp.state.model.trainable.values()]))
"""


def python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    env["FEDTEACH_DATA"] = "offline"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_fedteach_first_keeps_tensorflow_quiet():
    run = python("import fedteach, keras")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


@pytest.mark.parametrize("first", ["import tensorflow\n", "import keras\n"])
def test_importing_tensorflow_first_gives_the_same_numbers(first):
    fedteach_first = python(CNN_ROUND)
    tensorflow_first = python(first + CNN_ROUND)
    assert fedteach_first.returncode == 0, fedteach_first.stderr
    assert tensorflow_first.returncode == 0, tensorflow_first.stderr
    assert "UserWarning" not in tensorflow_first.stderr
    assert fedteach_first.stdout == tensorflow_first.stdout
    assert "nan" not in fedteach_first.stdout


def test_the_package_says_its_version_and_exports_every_name_it_lists():
    import fedteach

    assert fedteach.__version__
    assert {"Experiment", "build_federated_averaging_process", "federated_computation", "ClientData"} <= set(
        fedteach.__all__)
    assert all(hasattr(fedteach, name) for name in fedteach.__all__)
