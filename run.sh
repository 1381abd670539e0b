#!/usr/bin/env bash
# Installs fedteach in a virtual environment of its own (.venv) and runs the
# tutorial's training headless: 10 rounds of Federated Averaging, printing the
# metrics of every round. Extra arguments go to the `fedteach` command
# (see `./run.sh --help`). The install is skipped when .venv already holds it
# for the current pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.fedteach-run-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ] || [ ! -x .venv/bin/fedteach ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
  touch "$stamp"
fi
exec .venv/bin/fedteach "$@"
