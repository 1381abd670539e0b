#!/usr/bin/env bash
# Installs fedteach in a virtual environment of its own (.venv) and runs the
# tutorial's training headless: 10 rounds of Federated Averaging, printing the
# metrics of every round. Extra arguments go to the `fedteach` command
# (see `.venv/bin/fedteach --help`).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/fedteach "$@"
