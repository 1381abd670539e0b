"""Importing fedteach: TensorFlow starts quiet and with oneDNN off when fedteach comes first; a warning otherwise."""
import os
import subprocess
import sys

import pytest


def python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_fedteach_first_turns_onednn_off_and_keeps_tensorflow_quiet():
    run = python("import fedteach, keras\n"
                 "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
    assert "oneDNN" not in run.stderr and "UserWarning" not in run.stderr


@pytest.mark.parametrize("first", ["keras", "tensorflow"])
def test_tensorflow_imported_first_is_named_in_a_warning(first):
    run = python(f"import {first}, fedteach")
    assert run.returncode == 0, run.stderr
    assert "TensorFlow was imported before fedteach, with oneDNN's custom operations on" in run.stderr
    assert "Import fedteach first" in run.stderr
