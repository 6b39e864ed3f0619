#!/bin/sh
# The seed boards' broker access (docs/boards.md), sourced by entrypoint.sh.
#
# Boards cannot be changed: they speak the seed's topics, outside the
# gateway's prefix, under BOARD_TOPIC_ROOT (default empty: the seed's exact
# topics). Each board is a user named after its SIM's number without '+',
# listed with its hash in the boards' password file (scripts/board-user.py),
# and may read only its own sms/send/<number> and write only the two topics
# every seed board writes. A board's worker (modem id board-<number>) reads
# those two and writes that board's send topic.

boards_root="${BOARD_TOPIC_ROOT:-}"
case "$boards_root" in *'#'*|*'+'*) echo "mosquitto: BOARD_TOPIC_ROOT must not contain MQTT wildcards" >&2; exit 2 ;; esac

# boards_passwd FILE OUT: append FILE's board users (already hashed) to OUT.
boards_passwd() {
  [ -f "$1" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    name="${line%%:*}"
    case "$name" in
      *[!0-9]*|'') echo "mosquitto: board user '$name' in $1 is not a number; use scripts/board-user.py" >&2; exit 2 ;;
    esac
    case "${line#*:}" in
      '$7$'*|'$6$'*) ;;
      *) echo "mosquitto: board user $name in $1 has no password hash; use scripts/board-user.py" >&2; exit 2 ;;
    esac
    printf '%s\n' "$line" >>"$2"
  done <"$1"
}

# boards_acl_anonymous: the ACL lines for clients without a user name. They
# must come before the first `user` line of the ACL file.
boards_acl_anonymous() {
  if [ "${MQTT_BOARDS_ANONYMOUS:-}" = "1" ]; then
    cat <<ACL
# MQTT_BOARDS_ANONYMOUS=1: ANY client that reaches the broker may read every
# board's messages and write statuses and received SMS for every board.
topic read ${boards_root}sms/send/#
topic write ${boards_root}/sms/status
topic write ${boards_root}/sms/receive
ACL
  fi
}

# boards_acl_user NAME: what board NAME may do.
boards_acl_user() {
  cat <<ACL

user ${1}
topic read ${boards_root}sms/send/${1}
topic write ${boards_root}/sms/status
topic write ${boards_root}/sms/receive
ACL
}

# boards_acl_users FILE: one block per board user in FILE.
boards_acl_users() {
  [ -f "$1" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    boards_acl_user "${line%%:*}"
  done <"$1"
}

# boards_acl_worker NUMBER: what the worker of board NUMBER needs besides a modem's topics.
boards_acl_worker() {
  cat <<ACL
topic write ${boards_root}sms/send/${1}
topic read ${boards_root}/sms/status
topic read ${boards_root}/sms/receive
ACL
}

# The demo profile's emulated board: user DEMO_BOARD_NUMBER (digits), its
# password MQTT_DEMO_BOARD_PASSWORD (setup-secrets.sh). Nothing without it.
boards_demo_number() {
  printf '%s' "${DEMO_BOARD_NUMBER:-}" | tr -cd '0-9'
}

# boards_demo_passwd OUT: append the demo board's plain line (hashed with the rest).
boards_demo_passwd() {
  [ -n "${MQTT_DEMO_BOARD_PASSWORD:-}" ] || return 0
  demo="$(boards_demo_number)"
  if [ -z "$demo" ]; then
    echo "mosquitto: MQTT_DEMO_BOARD_PASSWORD is set but DEMO_BOARD_NUMBER is not" >&2
    exit 2
  fi
  printf '%s:%s\n' "$demo" "$MQTT_DEMO_BOARD_PASSWORD" >>"$1"
}

# boards_acl_demo: the demo board's block, like any board's.
boards_acl_demo() {
  [ -n "${MQTT_DEMO_BOARD_PASSWORD:-}" ] || return 0
  boards_acl_user "$(boards_demo_number)"
}

# boards_conf DIR: the broker settings the opt-in needs (none without it).
boards_conf() {
  rm -f "$1/boards-anonymous.conf"
  if [ "${MQTT_BOARDS_ANONYMOUS:-}" = "1" ]; then
    echo "mosquitto: WARNING: MQTT_BOARDS_ANONYMOUS=1: clients without credentials may act as any seed board" >&2
    printf '# Written by boards.sh because MQTT_BOARDS_ANONYMOUS=1 (docs/boards.md).\nallow_anonymous true\n' \
      >"$1/boards-anonymous.conf"
  fi
}
