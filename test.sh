#!/usr/bin/env bash
# Runs every fedteach test: unit tests, doctests, the notebooks (nbval) and the
# browser tests, in a virtual environment of its own (.venv), installing what
# they need first. Usage: ./test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,flower,docs]"
# The browser tests drive Debian's Chromium with Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: chromium is missing and cannot be installed here (need root + apt-get); browser tests will fail." >&2
  fi
fi
export FEDTEACH_DATA=offline FEDTEACH_FAST=1 TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q tests fedteach notebooks --doctest-modules --nbval-lax "$@"
