#!/bin/sh
# /docker-entrypoint.d/ hook for the official nginx image: runs before the
# templates are rendered. Without a provided certificate, make a self-signed one
# on first start (kept on the volume that holds TLS_CERT) so TLS is never off.
# A centre (compose.centre.yml) runs this before Postgres and the broker, which
# present the same certificate to edge nodes: TLS_SELF_SIGNED_ALT_NAMES adds
# the names they reach it by ("DNS:centre.example,IP:192.0.2.10").
set -eu
cert="${TLS_CERT:-/etc/nginx/tls/cert.pem}"
key="${TLS_KEY:-/etc/nginx/tls/key.pem}"
if [ -s "$cert" ] && [ -s "$key" ]; then
    exit 0
fi
mkdir -p "$(dirname "$cert")" "$(dirname "$key")"
umask 077
if ! out="$(openssl req -x509 -newkey rsa:2048 -sha256 -days 825 -nodes \
    -keyout "$key" -out "$cert" \
    -subj "/CN=${TLS_SELF_SIGNED_CN:-smsgw.local}" \
    -addext "subjectAltName=DNS:${TLS_SELF_SIGNED_CN:-smsgw.local},DNS:localhost,IP:127.0.0.1${TLS_SELF_SIGNED_ALT_NAMES:+,$TLS_SELF_SIGNED_ALT_NAMES}" 2>&1)"; then
    echo "40-self-signed-cert: openssl failed (TLS_SELF_SIGNED_ALT_NAMES='${TLS_SELF_SIGNED_ALT_NAMES:-}'): $out" >&2
    exit 1
fi
echo "40-self-signed-cert: generated a self-signed certificate at $cert" >&2
