#!/usr/bin/env bash
# REST fuzzing with schemathesis against the OpenAPI document the api serves, on a
# running demo (embedded 3-node cluster on loopback). Bounded in time; fails on any 5xx
# other than 503 (cluster unavailable, documented), any response that breaks the
# document, and any panic in the demo's log.
#
#   scripts/schemathesis.sh [seconds]        (default: 120 s in all)
#
# Installs schemathesis from PyPI into a virtualenv (SCHEMATHESIS_VENV, default
# ~/.cache/seat-ledger-schemathesis). Reports go to runs/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

secs="${1:-120}"
case "$secs" in '' | *[!0-9]*) echo "schemathesis.sh: seconds must be a whole number, got '$secs'" >&2; exit 2 ;; esac
version=4.32.5
venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/seat-ledger-schemathesis}"
if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "schemathesis.sh: installing schemathesis $version into $venv"
  for tool in python3 curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv curl; }
  done
  python3 -m venv "$venv" 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

cargo build -p api --bin api --locked
api_bin="${CARGO_TARGET_DIR:-target}/debug/api"
out=runs/schemathesis
rm -rf "$out" && mkdir -p "$out"
data="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$api_bin" demo --listen "127.0.0.1:$port" --data-dir "$data/demo" >"$out/demo.log" 2>&1 &
demo=$!
cleanup() { kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

for _ in $(seq 1 240); do
  curl -fsS "$base/api/v1/cities" >/dev/null 2>&1 && break
  kill -0 "$demo" 2>/dev/null || { echo "schemathesis.sh: the demo exited:" >&2; cat "$out/demo.log" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "$base/api/v1/cities" >/dev/null || { echo "schemathesis.sh: the demo did not come up" >&2; exit 1; }

login() { # email password -> access token
  curl -fsS -X POST "$base/api/v1/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$1\",\"password\":\"$2\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
password_of() { sed -n "s/^demo: $1 *$2@demo.example \/ //p" "$out/demo.log" | head -1; }
admin_token=$(login admin@demo.example "$(password_of admin admin)")
customer_token=$(login customer@demo.example "$(password_of customer customer)")

# Checks: no server error, documented status codes, content types and bodies.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
run() { # name token seconds
  local name=$1 token=$2 time=$3
  echo "schemathesis.sh: run '$name' for ${time} s"
  "$venv/bin/st" run "$base/api/openapi.json" --url "$base" \
    -H "Authorization: Bearer $token" --checks "$checks" \
    --max-time "$time" --workers 1 --rate-limit 40/s --request-timeout 10 --seed 1 \
    --suppress-health-check all --no-color \
    --report junit,ndjson --report-dir "$out/$name" >"$out/$name.log" 2>&1
}
status=0
run admin "$admin_token" $((secs / 2)) || status=1
run customer "$customer_token" $((secs - secs / 2)) || status=1
for name in admin customer; do
  echo "---- $name: summary"
  sed -n '/SUMMARY/,$p' "$out/$name.log" | head -40
done
if grep -q 'panicked' "$out/demo.log"; then
  echo "schemathesis.sh: the demo panicked:" >&2
  grep -B2 -A8 'panicked' "$out/demo.log" >&2
  status=1
fi
[ "$status" -eq 0 ] || echo "schemathesis.sh: FAILED (logs in $out/)" >&2
exit "$status"
