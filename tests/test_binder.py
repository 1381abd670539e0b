"""Binder as built: repo2docker's Dockerfile, reproduced in a virtual environment, runs every notebook.

``tools/binder_check.py`` does the work (see its docstring); the last test
builds the environment from scratch and takes several minutes.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORT = ROOT / 'artifacts' / 'binder' / 'report.json'


@pytest.fixture(scope='module')
def binder_check():
    spec = importlib.util.spec_from_file_location('binder_check', ROOT / 'tools' / 'binder_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def dockerfile(binder_check):
    return binder_check.dockerfile(ROOT)


def test_repo2docker_installs_the_base_then_requirements_then_postbuild(binder_check, dockerfile):
    assert binder_check.build_steps(dockerfile) == ['requirements', 'postBuild']
    packages = binder_check.lock_packages(binder_check.base_lock(dockerfile))
    assert packages['python'].startswith('3.11.')  # binder/runtime.txt
    assert {'jupyterlab', 'notebook', 'ipykernel', 'ipywidgets'} <= set(packages)


def test_requirements_keep_the_base_jupyterlab_and_notebook(binder_check, dockerfile):
    """notebook 7.4 needs jupyterlab < 4.5: overriding one without the other breaks Notebook 7."""
    pinned = {line.split('==')[0].lower().replace('_', '-') for line in
              (ROOT / 'binder' / 'requirements.txt').read_text().splitlines() if '==' in line}
    assert not {'jupyterlab', 'notebook'} & pinned
    base = binder_check.lock_packages(binder_check.base_lock(dockerfile))
    assert base['ipykernel'] == '7.0.1' and 'ipykernel' in pinned  # the base's has the thread bug


def test_postbuild_installs_fedteach_and_stops_at_an_error():
    lines = (ROOT / 'binder' / 'postBuild').read_text().splitlines()
    assert lines[0] == '#!/bin/bash' and 'set -e' in lines
    assert any('pip install' in line and ' .' in line for line in lines)


def test_every_notebook_runs_on_binder_within_its_memory(binder_check):
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'binder_check.py'), '--fast',
                             '--report', str(REPORT)], cwd=ROOT, text=True, capture_output=True, timeout=5400)
    print(result.stdout[-6000:])
    report = json.loads(REPORT.read_text())
    assert report['pip_check'] == 'No broken requirements found.', report['pip_check']
    notebooks = sorted(path.name for path in (ROOT / 'notebooks').glob('*.ipynb'))
    assert [r['notebook'] for r in report['notebooks']] == ['00_dashboard_smoke.ipynb'] + notebooks
    for run in report['notebooks']:
        assert run['passed'], f"{run['notebook']}: {run['summary']} (log: {run['log']})"
        assert run['peak_kernel_mb'] <= binder_check.MEMORY_LIMIT_MB, run
    assert result.returncode == 0, result.stderr[-3000:]
