#!/usr/bin/env bash
# The [perf] comparison in one go: installs PostgreSQL and Redis (or Valkey) from Debian
# packages if missing, starts each in a temporary directory on loopback (free ports,
# non-root user when run as root), runs every scenario against our cluster (client
# protocol and REST), PostgreSQL and Redis with bounded durations, stops everything
# (also on failure or Ctrl-C), and leaves the JSON records, report.md and the SVG plots
# in the output directory (default: runs/bench-<time>, which git ignores).
#
#   scripts/bench-baselines.sh [--quick] [--out DIR]
#
# --quick takes about 5 minutes after the build; the full run about 20 minutes on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=0
out=""
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --out) out="${2:?--out needs a directory}"; shift ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$repo/runs/bench-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- install ------------------------------------------------------------------------
packages=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || packages+=(postgresql)
if ! command -v redis-server >/dev/null && ! command -v valkey-server >/dev/null; then
    if apt-cache show redis-server >/dev/null 2>&1; then packages+=(redis-server); else packages+=(valkey-server); fi
fi
if ((${#packages[@]})); then
    echo "installing ${packages[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
redis_server="$(command -v redis-server || command -v valkey-server)"
redis_cli="$(command -v redis-cli || command -v valkey-cli)"

# --- a temporary home for both servers, on the same disk as our cluster's data ------
work="$(mktemp -d /var/tmp/seat-ledger-bench.XXXXXX)"
runas=()
if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root; the package created the postgres user.
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$work"
    runas=(runuser -u postgres --)
fi

redis_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -f "$work/pg/postmaster.pid" ]; then
        "${runas[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT INT TERM

# A port nobody listens on (a refused connection means free).
free_port() {
    local port
    for port in $(seq "$1" $(($1 + 200))); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port from $1" >&2
    return 1
}

pg_port="$(free_port 25432)"
"${runas[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --no-locale >"$work/initdb.log"
"${runas[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$work \
     -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c max_connections=600 \
     -c shared_buffers=256MB" start >/dev/null

redis_port="$(free_port 26379)"
mkdir -p "$work/redis"
[ ${#runas[@]} -eq 0 ] || chown postgres "$work/redis"
# Not durable on purpose and said so in the report: no RDB snapshots, no AOF.
"${runas[@]}" "$redis_server" --bind 127.0.0.1 --port "$redis_port" --dir "$work/redis" \
    --save "" --appendonly no --protected-mode yes >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
    "$redis_cli" -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
"$redis_cli" -p "$redis_port" ping >/dev/null

# --- build and run ------------------------------------------------------------------
cd "$repo"
# The same build settings as the tests (ccache for RocksDB's C++): without them cargo
# would rebuild RocksDB from scratch, for this build and the next test run.
source scripts/env.sh
cargo build --release -p loadgen
loadgen="${CARGO_TARGET_DIR:-$repo/target}/release/loadgen"
common=(--out "$out" --data-dir "$work"
    --postgres-url "host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"
    --redis-url "redis://127.0.0.1:$redis_port/")
{
    echo "started $(date -u +%FT%TZ)"
    echo "uptime: $(uptime)"
    echo "nproc: $(nproc)"
    echo "postgres: $("$pg_bin/postgres" --version)"
    echo "redis: $("$redis_server" --version)"
} >"$out/machine.txt"

if ((quick)); then
    "$loadgen" run "${common[@]}" --scenarios stampede --clients 1,16,256 --warmup 1 --duration 5 \
        --targets ours,ours-saga,rest,postgres,redis \
        --expected-rate 16000 --shows-max 100
    "$loadgen" run "${common[@]}" --no-baseline --scenarios multi-city,browsing --clients 64 \
        --warmup 1 --duration 5 --expected-rate 16000 --shows-max 100
    "$loadgen" run "${common[@]}" --no-baseline --scenarios stampede --clients none --rates 200 \
        --warmup 1 --duration 5
else
    "$loadgen" run "${common[@]}" --scenarios stampede --clients 1,4,16,64,256 --warmup 2 \
        --targets ours,ours-saga,rest,postgres,redis \
        --duration 10 --expected-rate 16000 --shows-max 100
    "$loadgen" run "${common[@]}" --no-baseline --scenarios multi-city,browsing \
        --clients 1,16,64,256 --warmup 2 --duration 10 --expected-rate 16000 --shows-max 100
    "$loadgen" run "${common[@]}" --no-baseline --scenarios stampede --clients none \
        --rates 200,800 --warmup 2 --duration 10
fi
echo "finished $(date -u +%FT%TZ); uptime: $(uptime)" >>"$out/machine.txt"
echo "results: $out/report.md"
