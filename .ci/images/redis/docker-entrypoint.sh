#!/bin/sh
# Same contract as the official redis image's entrypoint.
set -e
# first arg is `-f` or `--some-option`, or a .conf file
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
um="$(umask)"
if [ "$um" = '0022' ]; then
  umask 0077
fi
if [ "$1" = 'redis-server' ]; then
  # The official build turns protected mode off; containers reach it over the network.
  shift
  set -- redis-server "$@" --protected-mode no
fi
exec "$@"
