#!/usr/bin/env bash
# Run every benchmark in turn; each prints its own figures (bench/README.md).
# Needs what `make test` installs, plus wrk for the API load.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
for script in api_load worker_throughput pipeline_latency pipeline_throughput pipeline_inbound stats_cost dashboard_load; do
  echo "== bench/$script.py"
  "$PY" "bench/$script.py"
done
