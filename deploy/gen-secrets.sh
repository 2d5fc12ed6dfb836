#!/usr/bin/env bash
# Makes the secrets compose.yaml mounts: a random cluster secret (>= 16 bytes; peers
# prove it to each other) and an Ed25519 key pair for the api's access tokens.
# Never overwrites an existing secret (rotate on purpose: see runbooks/rolling-upgrade.md).
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
if [ ! -s "$dir/cluster_secret" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/cluster_secret"
  echo "wrote $dir/cluster_secret"
fi
if [ ! -s "$dir/jwt-k1.pem" ]; then
  command -v openssl >/dev/null || { echo "gen-secrets: openssl is needed for the JWT key pair" >&2; exit 1; }
  openssl genpkey -algorithm ed25519 -out "$dir/jwt-k1.pem"
  openssl pkey -in "$dir/jwt-k1.pem" -pubout -out "$dir/jwt-k1.pub.pem"
  echo "wrote $dir/jwt-k1.pem and $dir/jwt-k1.pub.pem"
fi
# The containers run as uid 10001; compose file secrets keep the host file's owner.
chmod 644 "$dir/cluster_secret" "$dir/jwt-k1.pem" "$dir/jwt-k1.pub.pem" 2>/dev/null || true
