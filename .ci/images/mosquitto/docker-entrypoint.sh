#!/bin/sh
# Same contract as the official eclipse-mosquitto entrypoint.
set -e
user="$(id -u)"
if [ "$user" = '0' ]; then
  [ -d "/mosquitto" ] && chown -R mosquitto:mosquitto /mosquitto || true
fi
exec "$@"
