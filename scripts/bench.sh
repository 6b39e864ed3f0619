#!/usr/bin/env bash
# Run every benchmark in turn; each prints its own figures (bench/README.md).
# Needs what `make test` installs, plus wrk (Debian's package) for the API load.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing wrk (Debian package)" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
PY=.venv/bin/python
for script in api_load worker_throughput pipeline_latency pipeline_throughput pipeline_inbound stats_cost dashboard_load; do
  echo "== bench/$script.py"
  "$PY" "bench/$script.py"
done
