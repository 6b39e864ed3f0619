#!/bin/sh
# Writes the broker's password file and ACL from the environment (one user per
# service, see .env), then hands over to the image's own entrypoint. Runs as
# root before mosquitto drops to its own user.
set -eu

prefix="${MQTT_PREFIX:-smsgw/}"
case "$prefix" in */) ;; *) prefix="$prefix/" ;; esac
case "$prefix" in *'#'*|*'+'*) echo "mosquitto: MQTT_PREFIX must not contain MQTT wildcards: $prefix" >&2; exit 2 ;; esac

auth=/run/mosquitto-auth  # outside /mosquitto, which the image chowns to its user
mkdir -p "$auth"
chown root:mosquitto "$auth"
chmod 0750 "$auth"
umask 077
: >"$auth/passwd.new"

add_user() {  # add_user NAME PASSWORD_VARIABLE
  eval "password=\${$2:-}"
  if [ -z "$password" ]; then
    echo "mosquitto: $2 is not set; run scripts/setup-secrets.sh" >&2
    exit 2
  fi
  printf '%s:%s\n' "$1" "$password" >>"$auth/passwd.new"
}

add_user "${MQTT_API_USERNAME:-api}" MQTT_API_PASSWORD
add_user "${MQTT_MODEM_WORKER_USERNAME:-modem-worker}" MQTT_MODEM_WORKER_PASSWORD
add_user "${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}" MQTT_STATS_COLLECTOR_PASSWORD
# The container's own health check: a random password for every start,
# readable only inside this container.
health_password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$health_password" >"$auth/healthcheck.password"
printf 'healthcheck:%s\n' "$health_password" >>"$auth/passwd.new"
# Hash the plain "user:password" lines in place: passwords never appear on a
# command line, where any process on the host could read them.
mosquitto_passwd -U "$auth/passwd.new"

p="$prefix"
cat >"$auth/acl.new" <<ACL
# Generated at container start by entrypoint.sh; edit that file, not this one.
# Topics: DESIGN.md "MQTT topics", all under the prefix ${p}

user ${MQTT_API_USERNAME:-api}
topic write ${p}modems/+/outbox
topic write ${p}modems/+/command
topic read ${p}modems/+/state
topic read ${p}modems/+/command/reply
topic readwrite ${p}events/messages
topic write ${p}stats/+

user ${MQTT_MODEM_WORKER_USERNAME:-modem-worker}
topic read ${p}modems/+/outbox
topic read ${p}modems/+/command
topic write ${p}modems/+/state
topic write ${p}modems/+/command/reply
topic write ${p}events/messages
topic write ${p}stats/+

user ${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}
topic read ${p}stats/+
topic read ${p}modems/+/state
topic write ${p}stats/+

user healthcheck
topic read \$SYS/broker/uptime
ACL

# Readable by the broker's group only; the broker re-reads them as user mosquitto.
chown root:mosquitto "$auth/passwd.new" "$auth/acl.new"
chmod 0640 "$auth/passwd.new" "$auth/acl.new"
mv "$auth/passwd.new" "$auth/passwd"
mv "$auth/acl.new" "$auth/acl"

exec /docker-entrypoint.sh "$@"
