#!/bin/sh
# A centre's Postgres (compose.centre.yml): TLS with the certificate the
# dashboard presents (the `tls` volume, made before anything starts), then
# the image's own entrypoint. Runs as root: Postgres reads its key only from
# a file its user owns with mode 0600, so it gets a copy of its own.
set -eu
dir=/run/smsgw-tls
mkdir -p "$dir"
for f in cert.pem key.pem; do
  if [ ! -s "/smsgw-tls/$f" ]; then
    echo "postgres: /smsgw-tls/$f is missing (the tls-setup service makes it)" >&2
    exit 2
  fi
  cp "/smsgw-tls/$f" "$dir/$f"
done
chown -R postgres:postgres "$dir"
chmod 0700 "$dir"
chmod 0600 "$dir/key.pem"
exec docker-entrypoint.sh "$@" \
  -c ssl=on -c "ssl_cert_file=$dir/cert.pem" -c "ssl_key_file=$dir/key.pem" \
  -c ssl_min_protocol_version=TLSv1.2 -c hba_file=/smsgw-centre/pg_hba.conf
