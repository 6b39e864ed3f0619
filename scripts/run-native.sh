#!/usr/bin/env bash
# Development without containers: the API, two emulated modem workers, the
# stats collector and (if nginx is installed) the dashboard, from .venv,
# against the Postgres, Mosquitto and Redis running on 127.0.0.1 (anonymous
# dev broker, trust-auth Postgres). Ctrl-C (or SIGTERM) stops them all.
#   API        http://127.0.0.1:5001      (NATIVE_API_PORT)
#   dashboard  https://127.0.0.1:8443     (NATIVE_HTTPS_PORT, self-signed; NATIVE_HTTP_PORT 8080)
#   emulators  http://127.0.0.1:7101, :7102 (NATIVE_EMULATOR_PORT; POST /inject {"sender","text"}, GET /sent)
#   collector  http://127.0.0.1:9102/metrics (NATIVE_STATS_PORT)
# Also: NATIVE_DB (database, made if missing), NATIVE_REDIS_URL, MQTT_PREFIX,
# NATIVE_ENV_FILE (secrets, made by setup-secrets.sh if missing).
# Settings already in the environment win over the env file's; the env
# file's empty ones (.env.example has many) are left out, so they mean
# "the default" as they do under compose.
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
emulator_port="${NATIVE_EMULATOR_PORT:-7101}"
stats_port="${NATIVE_STATS_PORT:-9102}"

# psycopg2 from .venv rather than psql: no client package needed.
"$PY" - "$pg_admin" "$db" <<'PY'
import sys

import psycopg2

admin_url, name = sys.argv[1:]
conn = psycopg2.connect(admin_url)
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if cur.fetchone() is None:
        cur.execute('CREATE DATABASE "%s"' % name.replace('"', '""'))
        print(f"created database {name}")
conn.close()
PY

load_env_file() {  # NAME=value lines; quotes around a value are dropped
  local line name value
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    name="${line%%=*}"
    value="${line#*=}"
    [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    case "$value" in \"*\") value="${value:1:-1}" ;; \'*\') value="${value:1:-1}" ;; esac
    [ -n "${value//[[:space:]]/}" ] || continue
    [ -n "${!name:-}" ] || export "$name=$value"
  done <"$1"
}
case "$env_file" in /*) load_env_file "$env_file" ;; *) load_env_file "$ROOT/$env_file" ;; esac
export DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:5432/$db"
export REDIS_URL="${NATIVE_REDIS_URL:-redis://127.0.0.1:6379/0}"
export MQTT_HOST=127.0.0.1 MQTT_PORT=1883 MQTT_PREFIX="${MQTT_PREFIX:-smsgw/}"
# The dev broker is anonymous: no per-service broker users here.
unset MQTT_API_USERNAME MQTT_MODEM_WORKER_USERNAME MQTT_STATS_COLLECTOR_USERNAME
export API_BIND="127.0.0.1:$api_port" LOG_JSON=false GUNICORN_WORKERS=1

pids=()
run=""
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$run" ] || rm -rf "$run"
}
trap cleanup EXIT
# A stop asked for is a clean exit (status 0) once everything is down.
trap 'exit 0' INT TERM

# serve: migrations, the first admin, then gunicorn -c python:smsgw_api.gunicorn_conf
# (its hooks start what runs beside the requests), exactly as in the image.
"$PY" -m smsgw_api serve & pids+=($!)
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 1
done
# The workers' outcome journals (one directory per modem) outlive a restart.
export WORKER_DATA_DIR="${WORKER_DATA_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/smsgw-native/worker}"
for n in 1 2; do
  MODEM_ID="native-$n" MODEM_EMULATOR=generic MODEM_EMULATOR_CONTROL="127.0.0.1:$((emulator_port + n - 1))" \
    "$PY" -m smsgw_worker run & pids+=($!)
done
STATS_METRICS_ADDR=127.0.0.1 STATS_METRICS_PORT="$stats_port" "$PY" -m smsgw_stats & pids+=($!)

if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  PATH="$PATH:/usr/sbin"
  run="$(mktemp -d)"
  mkdir -p "$run/conf.d" "$run/tls" "$run/tmp"
  TLS_CERT="$run/tls/cert.pem" TLS_KEY="$run/tls/key.pem" TLS_SELF_SIGNED_CN=localhost \
    sh services/dashboard/nginx/40-self-signed-cert.sh 2>/dev/null
  template=services/dashboard/nginx/default.conf.template
  # Every ${VAR} the template names must be set here (the image's entrypoint
  # renders them all): one left in would read to nginx as its own variable.
  declare -A nginx_env=(
    [API_UPSTREAM]="127.0.0.1:$api_port" [DASHBOARD_HTTP_LISTEN]="127.0.0.1:$http_port"
    [DASHBOARD_LISTEN]="127.0.0.1:$https_port ssl" [DASHBOARD_PUBLIC_HTTPS_PORT]="$https_port"
    [DASHBOARD_ROOT]="$ROOT/services/dashboard/static"
    [TLS_CERT]="$run/tls/cert.pem" [TLS_KEY]="$run/tls/key.pem"
  )
  for name in $(grep -o '\${[A-Z_][A-Z0-9_]*}' "$template" | tr -d '${}' | sort -u); do
    if [ -z "${nginx_env[$name]+set}" ]; then
      echo "run-native: $template names \${$name}, which this script does not set" >&2
      exit 1
    fi
  done
  (
    for name in "${!nginx_env[@]}"; do export "$name=${nginx_env[$name]}"; done
    envsubst "$(printf '${%s} ' "${!nginx_env[@]}")" <"$template" >"$run/conf.d/default.conf"
  )
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
# Stop everything as soon as one of them exits, with that one's status.
wait -n
