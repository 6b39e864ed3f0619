#!/usr/bin/env bash
# Which serial ports answer AT, and what modem and SIM each one holds
# (manufacturer, model, IMEI, SIM state, signal): `python -m smsgw_worker probe`.
#   scripts/probe.sh [ports...]     # default: /dev/serial/by-id/*, /dev/ttyUSB*, /dev/ttyACM*
# Natively from .venv when it has the worker (no image needed); otherwise in
# the worker image with the ports passed in. Stop the worker of a port first:
# two programs talking AT on one port confuse each other.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh

if [ -x .venv/bin/python ] && .venv/bin/python -c 'import smsgw_worker' 2>/dev/null; then
  exec .venv/bin/python -m smsgw_worker probe "$@"
fi
ports=("$@")
if [ ${#ports[@]} -eq 0 ]; then
  shopt -s nullglob
  ports=(/dev/serial/by-id/* /dev/ttyUSB* /dev/ttyACM*)
fi
if [ ${#ports[@]} -eq 0 ]; then
  echo "no serial ports found (/dev/serial/by-id, /dev/ttyUSB*, /dev/ttyACM*): is the modem plugged in?" >&2
  exit 1
fi
image="$(sed -n 's/^SMSGW_IMAGE_PREFIX=//p' "$env_file" 2>/dev/null | tail -n 1)"
image="${image:-smsgw}/modem-worker:latest"
docker image inspect "$image" >/dev/null 2>&1 || compose --profile build build modem-worker
args=() paths=()
for p in "${ports[@]}"; do
  # by-id names are symlinks: pass the device under its own name too.
  args+=(--device "$(readlink -f "$p"):$p")
  paths+=("$p")
done
exec docker run --rm --user root "${args[@]}" "$image" probe "${paths[@]}"
