#!/usr/bin/env bash
# The tests need Postgres, Mosquitto and Redis on 127.0.0.1 (they make their
# own databases, topic prefixes and Redis db numbers). Says what is missing
# and how to get it on Debian or Raspberry Pi OS, instead of failing later in
# a fixture. Checks where the tests will look: TEST_PG_ADMIN_URL,
# TEST_MQTT_HOST/TEST_MQTT_PORT and TEST_REDIS_URL (tests/support/services.py).
set -uo pipefail

pg_url="${TEST_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/test}"
mqtt_host="${TEST_MQTT_HOST:-127.0.0.1}" mqtt_port="${TEST_MQTT_PORT:-1883}"
redis_url="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"

host_port() {  # URL default-port: "host port" of a scheme://[user@]host[:port]/... URL
  [[ "$1" =~ ^[a-z0-9+]+://([^@/]*@)?([^:/]+)(:([0-9]+))? ]] || return 1
  echo "${BASH_REMATCH[2]} ${BASH_REMATCH[4]:-$2}"
}
read -r pg_host pg_port < <(host_port "$pg_url" 5432)
read -r redis_host redis_port < <(host_port "$redis_url" 6379)

listening() {  # host port: true if something accepts a TCP connection there
  timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

missing=0
say() { missing=1; printf '%s\n' "$@" >&2; echo >&2; }

if ! listening "$pg_host" "$pg_port"; then
  say "Postgres is not listening on $pg_host:$pg_port." \
      "  get it:   sudo apt-get install postgresql" \
      "  start it: sudo systemctl start postgresql   (or: sudo pg_ctlcluster 15 main start)"
elif command -v psql >/dev/null \
     && ! pg_error="$(psql "$pg_url" -w -tAc 'SELECT 1' 2>&1 >/dev/null)"; then
  say "Postgres listens, but the tests cannot log in to $pg_url:" \
      "  ${pg_error:-psql failed}" \
      "  the tests need a passwordless superuser 'postgres' on 127.0.0.1 and a database 'test':" \
      "  sudo -u postgres createdb test" \
      "  then in /etc/postgresql/*/main/pg_hba.conf, before the other host lines:" \
      "    host all postgres 127.0.0.1/32 trust" \
      "  and: sudo systemctl reload postgresql"
fi
if ! listening "$mqtt_host" "$mqtt_port"; then
  say "Mosquitto is not listening on $mqtt_host:$mqtt_port (anonymous clients)." \
      "  get it:   sudo apt-get install mosquitto" \
      "  start it: sudo systemctl start mosquitto" \
      "  (Debian's default configuration listens on localhost and allows anonymous clients.)"
fi
if ! listening "$redis_host" "$redis_port"; then
  say "Redis is not listening on $redis_host:$redis_port." \
      "  get it:   sudo apt-get install redis-server" \
      "  start it: sudo systemctl start redis-server"
fi
if [ "$missing" = 1 ]; then
  echo "make test needs the services above (README: Tests)." >&2
  exit 1
fi
