#!/usr/bin/env bash
# Development without containers: the API, two emulated modem workers, the
# stats collector and (if nginx is installed) the dashboard, from .venv,
# against the Postgres, Mosquitto and Redis running on 127.0.0.1 (anonymous
# dev broker, trust-auth Postgres). Ctrl-C stops them all.
#   API        http://127.0.0.1:5001      (NATIVE_API_PORT)
#   dashboard  https://127.0.0.1:8443     (NATIVE_HTTPS_PORT, self-signed)
#   emulators  http://127.0.0.1:7101, :7102 (POST /inject {"sender","text"}, GET /sent)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "no .venv: run 'make test' (or scripts/test.sh) once first" >&2; exit 1; }

env_file="${NATIVE_ENV_FILE:-.env.native}"
scripts/setup-secrets.sh "$env_file" >/dev/null
db="${NATIVE_DB:-smsgw_dev}"
pg_admin="${NATIVE_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
api_port="${NATIVE_API_PORT:-5001}"
https_port="${NATIVE_HTTPS_PORT:-8443}"
http_port="${NATIVE_HTTP_PORT:-8080}"

if ! psql "$pg_admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql "$pg_admin" -qc "CREATE DATABASE \"$db\""
  echo "created database $db"
fi

set -a
# shellcheck disable=SC1090
. "$ROOT/$env_file"
set +a
export DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:5432/$db"
export REDIS_URL="${NATIVE_REDIS_URL:-redis://127.0.0.1:6379/0}"
export MQTT_HOST=127.0.0.1 MQTT_PORT=1883 MQTT_PREFIX="${MQTT_PREFIX:-smsgw/}"
# The dev broker is anonymous: no per-service broker users here.
unset MQTT_API_USERNAME MQTT_MODEM_WORKER_USERNAME MQTT_STATS_COLLECTOR_USERNAME
export API_BIND="127.0.0.1:$api_port" LOG_JSON=false GUNICORN_WORKERS=1

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$PY" -m smsgw_api serve & pids+=($!)
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 1
done
for n in 1 2; do
  MODEM_ID="native-$n" MODEM_EMULATOR=generic MODEM_EMULATOR_CONTROL="127.0.0.1:710$n" \
    "$PY" -m smsgw_worker run & pids+=($!)
done
STATS_METRICS_ADDR=127.0.0.1 "$PY" -m smsgw_stats & pids+=($!)

if command -v nginx >/dev/null; then
  run="$(mktemp -d)"
  mkdir -p "$run/conf.d" "$run/tls" "$run/tmp"
  TLS_CERT="$run/tls/cert.pem" TLS_KEY="$run/tls/key.pem" TLS_SELF_SIGNED_CN=localhost \
    sh services/dashboard/nginx/40-self-signed-cert.sh 2>/dev/null
  API_UPSTREAM="127.0.0.1:$api_port" DASHBOARD_HTTP_LISTEN="127.0.0.1:$http_port" \
  DASHBOARD_LISTEN="127.0.0.1:$https_port ssl" DASHBOARD_ROOT="$ROOT/services/dashboard/static" \
  TLS_CERT="$run/tls/cert.pem" TLS_KEY="$run/tls/key.pem" \
    envsubst '${API_UPSTREAM} ${DASHBOARD_HTTP_LISTEN} ${DASHBOARD_LISTEN} ${DASHBOARD_ROOT} ${TLS_CERT} ${TLS_KEY}' \
    <services/dashboard/nginx/default.conf.template >"$run/conf.d/default.conf"
  cat >"$run/nginx.conf" <<CONF
worker_processes 1;
pid $run/nginx.pid;
error_log stderr;
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path $run/tmp; proxy_temp_path $run/tmp; fastcgi_temp_path $run/tmp;
  uwsgi_temp_path $run/tmp; scgi_temp_path $run/tmp;
  include $run/conf.d/*.conf;
}
CONF
  nginx -p "$run" -c "$run/nginx.conf" -g 'daemon off;' & pids+=($!)
  echo "dashboard: https://127.0.0.1:$https_port/ (self-signed)"
fi
echo "API: http://127.0.0.1:$api_port/  login: ${ADMIN_USERNAME:-admin} / password in $env_file"
# Stop everything as soon as one of them exits.
wait -n
