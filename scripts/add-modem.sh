#!/usr/bin/env bash
# Record a modem in compose.modems.yml, generate its broker password and
# start its worker (and nothing else that is not already running).
#   scripts/add-modem.sh PORT=/dev/serial/by-id/usb-...-if00-port0 [ID=modem-1]
#   scripts/add-modem.sh EMULATOR=generic [ID=emu-1]   # an emulated modem (tests, trying out)
# The id names the worker's broker user and its service (modem-worker-<id>).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh

port="" id="" emulator=""
for arg in "$@"; do
  case "$arg" in
    PORT=*) port="${arg#PORT=}" ;;
    ID=*) id="${arg#ID=}" ;;
    EMULATOR=*) emulator="${arg#EMULATOR=}" ;;
    *) echo "add-modem: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$port" ] && [ -z "$emulator" ]; then
  echo "usage: make add-modem PORT=/dev/serial/by-id/... [ID=...]   (make probe lists the ports)" >&2
  echo "       make add-modem EMULATOR=generic [ID=...]             (an emulated modem)" >&2
  exit 2
fi
if [ -n "$port" ] && [ -n "$emulator" ]; then
  echo "add-modem: PORT or EMULATOR, not both" >&2
  exit 2
fi
if [ -n "$port" ] && [ ! -e "$port" ]; then
  echo "add-modem: $port does not exist (make probe lists the serial ports)" >&2
  exit 1
fi
case "$port" in
  /dev/ttyUSB*|/dev/ttyACM*)
    echo "add-modem: note: $port may be renumbered at the next boot; prefer its /dev/serial/by-id/ name" >&2 ;;
esac

existing="$(modem_ids; grep -hv '^[[:space:]]*#' docker-compose.yml | sed -n 's/^[[:space:]]*MODEM_ID:[[:space:]]*"\{0,1\}\([A-Za-z0-9_-]*\).*/\1/p')"
if [ -z "$id" ]; then
  if [ -n "$port" ]; then
    # usb-HUAWEI_Mobile_xyz-if00-port0 -> huawei-mobile-xyz-if00-port0
    id="$(basename "$port" | sed -e 's/^usb-//' | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-' | cut -c1-40 | sed 's/-*$//')"
  else
    id="emu"
  fi
  base="$id" n=1
  [ -n "$emulator" ] && id="$base-$n"
  while printf '%s\n' "$existing" | grep -qx -- "$id"; do n=$((n + 1)); id="$base-$n"; done
fi
if ! printf '%s' "$id" | grep -qE '^[A-Za-z0-9_-]{1,48}$'; then
  echo "add-modem: ID must be letters, digits, - and _ (at most 48)" >&2
  exit 2
fi
if printf '%s\n' "$existing" | grep -qx -- "$id"; then
  echo "add-modem: a modem with ID $id exists already" >&2
  exit 1
fi

var="MQTT_MODEM_$(printf '%s' "$id" | tr 'a-z-' 'A-Z_')_PASSWORD"
service="modem-worker-$id"
# extends: resolves its file from the modems file's directory.
base_file="docker-compose.yml"
[ "$(cd "$(dirname "$modems_file")" && pwd)" = "$PWD" ] || base_file="$PWD/docker-compose.yml"
if [ ! -f "$modems_file" ]; then
  cat >"$modems_file" <<'HEAD'
# Your modems: written by `make add-modem` / `make remove-modem`
# (scripts/add-modem.sh); not tracked by git, so `git pull` keeps it.
# Each one extends the modem-worker service of docker-compose.yml.
services: {}
HEAD
fi
if [ -n "$emulator" ]; then
  device_lines="      MODEM_DEVICE: \"\"
      MODEM_EMULATOR: $emulator
      MODEM_EMULATOR_CONTROL: 127.0.0.1:7101"
  devices_line=""
else
  device_lines=""
  devices_line="    devices: [\"$port:/dev/modem\"]"
fi
tmp="$(mktemp -p "$(dirname "$modems_file")")"
{
  sed 's/^services: {}$/services:/' "$modems_file"
  cat <<SERVICE
  $service:
    extends: {file: $base_file, service: modem-worker}
    build: !reset null
    profiles: !reset []
    environment:
      MODEM_ID: $id
      MQTT_MODEM_WORKER_USERNAME: $id
      MQTT_MODEM_WORKER_PASSWORD: \${$var:?run scripts/setup-secrets.sh}
${device_lines}
${devices_line}
SERVICE
} | sed '/^$/d' >"$tmp"
mv "$tmp" "$modems_file"

record_compose_files
SMSGW_MODEMS_FILE="$modems_file" scripts/setup-secrets.sh "$env_file" >/dev/null
# The broker learns the new password when compose recreates it (its
# MQTT_MODEM_PASSWORDS changed); the other workers reconnect by themselves.
if ! compose up -d --no-build --wait --wait-timeout 180 mosquitto "$service"; then
  echo "add-modem: $service did not become healthy. The dashboard's SIMs & modems page says why;" >&2
  echo "  also: make status, make logs SERVICE=$service. It stays recorded: make remove-modem ID=$id" >&2
  exit 1
fi
echo "modem $id added: service $service (compose.modems.yml); remove it with: make remove-modem ID=$id"
