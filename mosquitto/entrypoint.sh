#!/bin/sh
# Writes the broker's password file and ACL from the environment (one user per
# service, see .env), then hands over to the image's own entrypoint. Runs as
# root before mosquitto drops to its own user.
#
# Edge nodes' modem workers (docs/deployment.md, "Several sites") come from
# the file the API writes as admins enrol and revoke nodes (hashed already);
# a watcher started below regenerates both files and reloads the broker
# within seconds of a change, without a restart.
#
# Outside the image (tests/board/test_broker_access.py runs this very script
# against a local mosquitto) four paths can be moved: MOSQUITTO_AUTH_DIR,
# BOARDS_PASSWD_FILE, NODES_PASSWD_FILE and MOSQUITTO_EXEC; and the TLS
# listener (MQTT_TLS_LISTENER, "port [address]").
set -eu
here="$(dirname "$0")"

prefix="${MQTT_PREFIX:-smsgw/}"
case "$prefix" in */) ;; *) prefix="$prefix/" ;; esac
case "$prefix" in *'#'*|*'+'*) echo "mosquitto: MQTT_PREFIX must not contain MQTT wildcards: $prefix" >&2; exit 2 ;; esac

# Seed boards: their users, ACL lines and the anonymous opt-in (boards.sh).
. "$here/boards.sh"
boards_file="${BOARDS_PASSWD_FILE:-/smsgw-boards/passwd}"  # scripts/board-user.py writes it
nodes_file="${NODES_PASSWD_FILE:-/smsgw-nodes/passwd}"  # the API writes it (routes/nodes.py)
# Whichever container mounts the shared volume first creates it, owned by
# root: the API's user (10001, services/api/Dockerfile) must be able to write.
nodes_dir="$(dirname "$nodes_file")"
if [ -d "$nodes_dir" ]; then
  chown "${NODES_WRITER_UID:-10001}" "$nodes_dir"
  chmod 0700 "$nodes_dir"
fi

auth="${MOSQUITTO_AUTH_DIR:-/run/mosquitto-auth}"  # outside /mosquitto, which the image chowns to its user
mkdir -p "$auth"
chown root:mosquitto "$auth"
chmod 0750 "$auth"
umask 077

# nodes_passwd FILE OUT: append FILE's node modem users (hashed) to OUT and
# their ids to $node_ids.
nodes_passwd() {
  node_ids=""
  [ -f "$1" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    id="${line%%:*}"
    case "$id" in
      ''|*[!A-Za-z0-9_.-]*|"${MQTT_API_USERNAME:-api}"|"${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}"|healthcheck|board-*)
        echo "mosquitto: invalid or reserved node modem id in $1: '$id'" >&2; exit 2 ;;
    esac
    case " $modem_ids " in *" $id "*) echo "mosquitto: node modem id $id is also in MQTT_MODEM_PASSWORDS" >&2; exit 2 ;; esac
    case "${line#*:}" in
      '$7$'*) ;;
      *) echo "mosquitto: node user $id in $1 has no password hash" >&2; exit 2 ;;
    esac
    printf '%s\n' "$line" >>"$2"
    node_ids="$node_ids $id"
  done <"$1"
}

# Every check in here ends with `exit`, not a failed status: the watcher runs
# it as `if (generate)`, where `set -e` does not apply.
generate() {
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
add_user "${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}" MQTT_STATS_COLLECTOR_PASSWORD
# One user per modem worker, named after its modem id, each with its own
# password: MQTT_MODEM_PASSWORDS="id:password id:password ..." (written by
# setup-secrets.sh from the MODEM_ID lines of docker-compose.yml). The ACL's
# `pattern` lines below confine each to its own modem's topics.
modems=0
modem_ids=""
for pair in ${MQTT_MODEM_PASSWORDS:-}; do
  id="${pair%%:*}"
  password="${pair#*:}"
  case "$id" in
    ''|*[!A-Za-z0-9_-]*|"${MQTT_API_USERNAME:-api}"|"${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}"|healthcheck)
      echo "mosquitto: invalid or reserved modem id in MQTT_MODEM_PASSWORDS: '$id'" >&2; exit 2 ;;
  esac
  if [ "$password" = "$pair" ] || [ ${#password} -lt 16 ]; then
    echo "mosquitto: modem $id has no (or a short) password in MQTT_MODEM_PASSWORDS; run scripts/setup-secrets.sh" >&2
    exit 2
  fi
  printf '%s:%s\n' "$id" "$password" >>"$auth/passwd.new"
  modem_ids="$modem_ids $id"
  modems=$((modems + 1))
done
if [ "$modems" = 0 ]; then
  echo "mosquitto: MQTT_MODEM_PASSWORDS names no modem; run scripts/setup-secrets.sh" >&2
  exit 2
fi
# The container's own health check: a random password for every start,
# readable only inside this container.
health_password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$health_password" >"$auth/healthcheck.password"
printf 'healthcheck:%s\n' "$health_password" >>"$auth/passwd.new"
# The demo's emulated board, when the demo profile's password is set.
boards_demo_passwd "$auth/passwd.new"
# Hash the plain "user:password" lines in place: passwords never appear on a
# command line, where any process on the host could read them.
mosquitto_passwd -U "$auth/passwd.new" || exit 2
# Board users come hashed already (scripts/board-user.py), node users too (the API).
boards_passwd "$boards_file" "$auth/passwd.new"
nodes_passwd "$nodes_file" "$auth/passwd.new"
mkdir -p "$auth/conf.d"
chown root:mosquitto "$auth/conf.d"
chmod 0750 "$auth/conf.d"
boards_conf "$auth/conf.d"
for f in "$auth"/conf.d/*.conf; do if [ -e "$f" ]; then chown root:mosquitto "$f"; chmod 0640 "$f"; fi; done

p="$prefix"
cat >"$auth/acl.new" <<ACL
# Generated at container start by entrypoint.sh; edit that file, not this one.
# Topics: docs/architecture.md "MQTT topics", all under the prefix ${p}
$(boards_acl_anonymous)

user ${MQTT_API_USERNAME:-api}
topic write ${p}modems/+/outbox
topic write ${p}modems/+/command
topic read ${p}modems/+/state
topic read ${p}modems/+/command/reply
topic readwrite ${p}events/messages
topic write ${p}stats/+

user ${MQTT_STATS_COLLECTOR_USERNAME:-stats-collector}
topic read ${p}stats/+
topic read ${p}modems/+/state
topic write ${p}stats/+

user healthcheck
topic read \$SYS/broker/uptime

$(boards_acl_users "$boards_file")
$(boards_acl_demo)
ACL

# Every modem worker is a user named after its modem id, with a block of its
# own: its outbox and commands to read, its state, replies and figures to
# write, nothing of another modem. (Not `pattern` lines: those would apply to
# every user, seed boards included.) A board's worker (modem id
# board-<number>) also drives that one board's send topic and reads the two
# topics every board writes (docs/boards.md).
for id in $modem_ids $node_ids; do
  cat >>"$auth/acl.new" <<ACL

user ${id}
topic read ${p}modems/${id}/outbox
topic read ${p}modems/${id}/command
topic write ${p}modems/${id}/state
topic write ${p}modems/${id}/command/reply
topic write ${p}stats/modem-worker-${id}
# Shared by design: the worker -> API event stream; see docs/security.md for
# what the API must check about its payload.
topic write ${p}events/messages
ACL
  case "$id" in
    board-*) boards_acl_worker "${id#board-}" >>"$auth/acl.new" ;;
  esac
done

# Readable by the broker's group only; the broker re-reads them as user mosquitto.
chown root:mosquitto "$auth/passwd.new" "$auth/acl.new"
chmod 0640 "$auth/passwd.new" "$auth/acl.new"
mv "$auth/passwd.new" "$auth/passwd"
mv "$auth/acl.new" "$auth/acl"
}

generate

# A centre (compose.centre.yml) also listens for edge nodes over TLS, with the
# certificate the dashboard presents: MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE
# name it (read here as root; the broker gets its own copy it may read).
rm -f "$auth/conf.d/tls.conf"
if [ -n "${MQTT_TLS_CERT_FILE:-}${MQTT_TLS_KEY_FILE:-}" ]; then
  for f in "${MQTT_TLS_CERT_FILE:-}" "${MQTT_TLS_KEY_FILE:-}"; do
    if [ ! -s "$f" ]; then
      echo "mosquitto: MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE must both name readable files ('$f' is not one)" >&2
      exit 2
    fi
  done
  cp "$MQTT_TLS_CERT_FILE" "$auth/tls-cert.pem"
  cp "$MQTT_TLS_KEY_FILE" "$auth/tls-key.pem"
  cat >"$auth/conf.d/tls.conf" <<TLS
# Written by entrypoint.sh: edge nodes' workers connect here (docs/deployment.md, "Several sites").
listener ${MQTT_TLS_LISTENER:-8883}
certfile $auth/tls-cert.pem
keyfile $auth/tls-key.pem
tls_version tlsv1.2
TLS
  chown root:mosquitto "$auth/tls-cert.pem" "$auth/tls-key.pem" "$auth/conf.d/tls.conf"
  chmod 0640 "$auth/tls-cert.pem" "$auth/tls-key.pem" "$auth/conf.d/tls.conf"
fi

# The nodes' file changes while the broker runs. This process becomes the
# broker (exec below), so the watcher signals its own parent's pid: SIGHUP
# makes mosquitto re-read the password file and the ACL. A file that fails
# the checks leaves the previous users in place. It ends with the broker.
broker=$$
nodes_stamp() { cksum "$nodes_file" 2>/dev/null || echo none; }
(
  last="$(nodes_stamp)"
  while sleep "${NODES_RELOAD_SECONDS:-2}"; do
    kill -0 "$broker" 2>/dev/null || exit 0
    now="$(nodes_stamp)"
    [ "$now" = "$last" ] && continue
    last="$now"
    if (generate); then
      kill -HUP "$broker"
      echo "mosquitto: edge nodes' users changed; reloaded" >&2
    else
      echo "mosquitto: $nodes_file refused; the previous users stay" >&2
    fi
  done
) &

exec "${MOSQUITTO_EXEC:-/docker-entrypoint.sh}" "$@"
