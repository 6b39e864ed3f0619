#!/usr/bin/env bash
# Generate strong secrets into .env (or the file given as $1). Never overwrites
# a secret that is already set; creates the file from .env.example the first
# time. Prints the admin login once: when it generates the admin password.
set -euo pipefail
cd "$(dirname "$0")/.."
env_file="${1:-.env}"

SECRETS=(POSTGRES_PASSWORD POSTGRES_OWNER_PASSWORD POSTGRES_API_PASSWORD
         POSTGRES_WORKER_PASSWORD POSTGRES_COLLECTOR_PASSWORD
         REDIS_PASSWORD JWT_SECRET ADMIN_PASSWORD
         MQTT_API_PASSWORD MQTT_STATS_COLLECTOR_PASSWORD MQTT_DEMO_BOARD_PASSWORD)

# Every modem worker is its own broker user, named after its MODEM_ID, with
# its own password MQTT_MODEM_<ID>_PASSWORD (upper case, "-" as "_"): one per
# uncommented "MODEM_ID: ..." in the compose files, including the modems that
# `make add-modem` recorded in compose.modems.yml (or $SMSGW_MODEMS_FILE).
compose_files=(docker-compose.yml)
for f in compose.override.yml docker-compose.override.yml "${SMSGW_MODEMS_FILE:-compose.modems.yml}"; do
  [ -f "$f" ] && compose_files+=("$f")
done
mapfile -t MODEM_IDS < <(grep -hv '^[[:space:]]*#' "${compose_files[@]}" \
  | grep -oE 'MODEM_ID:[[:space:]]*"?[A-Za-z0-9_-]+' | sed -E 's/^MODEM_ID:[[:space:]]*"?//' | sort -u)
modem_var() { printf 'MQTT_MODEM_%s_PASSWORD' "$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')"; }
for id in "${MODEM_IDS[@]}"; do SECRETS+=("$(modem_var "$id")"); done

# URL- and shell-safe characters only: these end up in connection URLs and .env.
generate() { head -c "$1" /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

current() {  # the value of $1 in the env file, or empty
  sed -n "s/^$1=//p" "$env_file" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

if [ ! -e "$env_file" ]; then
  if [ -f .env.example ]; then cp .env.example "$env_file"; else : >"$env_file"; fi
  echo "created $env_file"
fi
chmod 600 "$env_file"

generated=()
admin_generated=""
for name in "${SECRETS[@]}"; do
  if [ -n "$(current "$name")" ]; then
    continue
  fi
  case "$name" in
    JWT_SECRET) value="$(generate 48)" ;;
    ADMIN_PASSWORD) value="$(generate 15)"; admin_generated="$value" ;;
    *) value="$(generate 24)" ;;
  esac
  if grep -q "^$name=" "$env_file"; then
    # Replace the empty line in place (keeps .env.example's comments around it).
    tmp="$(mktemp -p "$(dirname "$env_file")")"
    awk -v n="$name" -v v="$value" 'BEGIN{FS=OFS="="} $1==n && !done {print n "=" v; done=1; next} {print}' \
      "$env_file" >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$env_file"
  else
    printf '%s=%s\n' "$name" "$value" >>"$env_file"
  fi
  generated+=("$name")
done

# The broker's copy of every modem's password, "id:password ...", rebuilt
# from the per-modem ones above (only rewritten when it changes).
pairs=""
for id in "${MODEM_IDS[@]}"; do
  pairs="${pairs:+$pairs }$id:$(current "$(modem_var "$id")")"
done
if [ "$(current MQTT_MODEM_PASSWORDS)" != "$pairs" ]; then
  tmp="$(mktemp -p "$(dirname "$env_file")")"
  grep -v '^MQTT_MODEM_PASSWORDS=' "$env_file" >"$tmp" || true
  printf 'MQTT_MODEM_PASSWORDS="%s"\n' "$pairs" >>"$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$env_file"
  generated+=(MQTT_MODEM_PASSWORDS)
fi

if [ ${#generated[@]} -eq 0 ]; then
  echo "$env_file: every secret is already set; nothing changed"
else
  echo "$env_file: generated ${generated[*]}"
fi
if [ -n "$admin_generated" ]; then
  admin_user="$(current ADMIN_USERNAME)"
  cat <<MSG

  First admin login (shown once):
    username: ${admin_user:-admin}
    password: $admin_generated
  Change the password after the first login (PUT /api/me/password). ADMIN_PASSWORD
  in $env_file is used only while the database has no user at all.

MSG
fi
