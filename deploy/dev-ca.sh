#!/usr/bin/env bash
# Makes a DEVELOPMENT certificate authority and certificates for the cluster's TLS:
# mutual TLS between raft-nodes and from api nodes and bookingctl to the nodes, and the
# api's public listener. ECDSA P-256 keys (PKCS#8 PEM), certificates valid as server and
# client, with the names and addresses each party is reached by.
#
#   deploy/dev-ca.sh [OUT_DIR]          # default: deploy/secrets/tls
#
# Environment: NODES (default "1 2 3"), NODE_NAMES_<id> (extra SANs, space separated;
# default: raft-node-<id>, the compose address 172.30.0.1<id>, localhost, 127.0.0.1),
# API_NAMES (default: api localhost 127.0.0.1), DAYS (default 365).
#
# Never overwrites an existing CA (its certificates would stop verifying); delete the
# directory to start over. Production certificates come from your PKI or a Vault PKI
# engine in the same file layout: ca.pem, <party>.pem, <party>.key.
set -euo pipefail
command -v openssl >/dev/null || { echo "dev-ca: openssl is needed (apt-get install openssl)" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/secrets/tls}"
days="${DAYS:-365}"
mkdir -p "$out"
chmod 700 "$out"
umask 077
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -s "$out/ca.pem" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" \
    -subj "/CN=seat-ledger development CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem"
  echo "wrote $out/ca.pem (CA key: $out/ca.key; keep it off the nodes)"
fi

# issue NAME SAN... : a key and a CA-signed certificate for NAME.
issue() {
  local name="$1"; shift
  if [ -s "$out/$name.pem" ]; then
    echo "kept $out/$name.pem"
    return
  fi
  local sans=()
  for san in "$@"; do
    if [[ "$san" =~ ^[0-9.]+$ || "$san" == *:* ]]; then sans+=("IP:$san"); else sans+=("DNS:$san"); fi
  done
  local joined
  joined="$(IFS=,; echo "${sans[*]}")"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$name.key" 2>/dev/null
  openssl req -new -key "$out/$name.key" -subj "/CN=$name" -out "$work/$name.csr"
  printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectAltName=$joined" > "$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -days "$days" -sha256 \
    -extfile "$work/$name.ext" -out "$out/$name.pem" 2>/dev/null
  echo "wrote $out/$name.pem and $out/$name.key ($joined)"
}

for id in ${NODES:-1 2 3}; do
  var="NODE_NAMES_$id"
  # shellcheck disable=SC2086
  issue "raft-node-$id" ${!var:-raft-node-$id 172.30.0.1$id localhost 127.0.0.1}
done
# shellcheck disable=SC2086
issue api ${API_NAMES:-api localhost 127.0.0.1}
issue bookingctl bookingctl
# The containers run as uid 10001; compose file secrets keep the host file's owner.
chmod 644 "$out"/*.pem "$out"/raft-node-*.key "$out"/api.key "$out"/bookingctl.key 2>/dev/null || true
echo "dev-ca: development certificates only; raft-node: --tls-ca-file ca.pem --tls-cert-file raft-node-N.pem --tls-key-file raft-node-N.key"
