#!/bin/sh
# Healthy = the broker accepts an authenticated client and serves $SYS.
exec mosquitto_sub -h 127.0.0.1 -p 1883 -u healthcheck -P "$(cat /run/mosquitto-auth/healthcheck.password)" \
  -t '$SYS/broker/uptime' -C 1 -W 3 >/dev/null
