#!/bin/sh
# /docker-entrypoint.d/ hook for the official nginx image: runs before the
# templates are rendered. Without a provided certificate, make a self-signed one
# on first start (kept on the volume that holds TLS_CERT) so TLS is never off.
set -eu
cert="${TLS_CERT:-/etc/nginx/tls/cert.pem}"
key="${TLS_KEY:-/etc/nginx/tls/key.pem}"
if [ -s "$cert" ] && [ -s "$key" ]; then
    exit 0
fi
mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -days 825 -nodes \
    -keyout "$key" -out "$cert" \
    -subj "/CN=${TLS_SELF_SIGNED_CN:-smsgw.local}" \
    -addext "subjectAltName=DNS:${TLS_SELF_SIGNED_CN:-smsgw.local},DNS:localhost,IP:127.0.0.1" >/dev/null 2>&1
echo "40-self-signed-cert: generated a self-signed certificate at $cert" >&2
