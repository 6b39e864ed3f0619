#!/usr/bin/env bash
# Stop and remove a modem that `make add-modem` recorded, and its broker user.
#   scripts/remove-modem.sh ID=modem-1
# Its SIM stays in the database (inactive once the sweeper sees its modem
# gone for SIM_ABSENT_HOURS) and comes back when the SIM is seen again.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-compose.sh

id=""
for arg in "$@"; do
  case "$arg" in
    ID=*) id="${arg#ID=}" ;;
    *) echo "remove-modem: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$id" ]; then
  echo "usage: make remove-modem ID=...   (the ids: $(modem_ids | tr '\n' ' '))" >&2
  exit 2
fi
if ! modem_ids | grep -qx -- "$id"; then
  echo "remove-modem: no modem $id in $modems_file (it has: $(modem_ids | tr '\n' ' '))" >&2
  exit 1
fi
service="modem-worker-$id"
compose rm -s -f "$service" >/dev/null
tmp="$(mktemp -p "$(dirname "$modems_file")")"
awk -v s="  $service:" '
  $0 == s { skip = 1; next }
  skip && /^  [^ ]/ { skip = 0 }
  skip && /^[^ ]/ { skip = 0 }
  !skip { print }
' "$modems_file" >"$tmp"
grep -q '^  [^ #]' "$tmp" || sed -i 's/^services:$/services: {}/' "$tmp"
mv "$tmp" "$modems_file"
SMSGW_MODEMS_FILE="$modems_file" scripts/setup-secrets.sh "$env_file" >/dev/null
# Recreated with the new MQTT_MODEM_PASSWORDS: the modem's broker user is gone.
compose up -d --no-build --wait --wait-timeout 180 mosquitto
echo "modem $id removed"
