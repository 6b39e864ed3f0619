#!/usr/bin/env bash
# Create the virtualenv, install the project and its test tools, run the tests.
# Postgres, Mosquitto and Redis must listen on 127.0.0.1 (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e common -e services/api -e services/modem-worker -e services/stats-collector -r requirements-dev.txt
exec .venv/bin/pytest "$@"
