#!/usr/bin/env bash
# A three-region rehearsal on one machine (root): five raft-nodes and three api nodes,
# each in its own network namespace, joined by a router namespace that delays traffic
# by region pair (about 2 ms RTT inside a region, 40-80 ms between regions). Then it
# measures, from each region: write latency, stale and linearizable read latency at the
# local replica and linearizable at the leader (bookingctl probe), and the api's stale vs
# linearizable read latency (curl); and the time to recover writes after the leader's
# whole region is cut off (bookingctl drill isolate-region). Everything is torn down on
# exit, also on failure or Ctrl-C. Bounded: about 3 minutes.
#
#   sudo deploy/multi-region.sh            # run the whole rehearsal, print the figures
#   deploy/multi-region.sh cut REGION      # (used by the drill) drop a region's traffic
#   deploy/multi-region.sh heal REGION
#   MULTI_REGION_NO_BUILD=1 ...            # skip `cargo build` (binaries already built)
#
# Delays: `tc qdisc ... netem` where the kernel has it. Kernels without sch_netem (this
# project's CI machines among them) get the same per-region-pair delays from a userspace
# NFQUEUE delayer (deploy/netem-nfqueue.py, PyPI package fnfqueue) in the router
# namespace; the script says which it used.
#
# Addresses are 10.201.x.y inside namespaces this script creates; nothing leaves them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
P=slmr                       # namespace / interface prefix
RT=$P-rt                     # the router namespace
STATE=/run/$P                # shared with `cut` / `heal` invocations
SECRET="multi-region-rehearsal-secret-0123456789"

# Regions: nodes 1-2 south, 3-4 west, 5 north; api 1 south, 2 west, 3 north.
declare -A REGION_OF=([n1]=south [n2]=south [n3]=west [n4]=west [n5]=north [a1]=south [a2]=west [a3]=north)
HOSTS=(n1 n2 n3 n4 n5 a1 a2 a3)
REGIONS=(south west north)
# One-way delay in ms by region pair (RTT is twice): south-west 40, south-north 60,
# west-north 80 ms RTT; 2 ms RTT within a region.
delay_ms() {
  local a=$1 b=$2
  [ "$a" = "$b" ] && { echo 1; return; }
  case "$a-$b" in
    south-west|west-south) echo 20 ;;
    south-north|north-south) echo 30 ;;
    west-north|north-west) echo 40 ;;
  esac
}
ip_of() { # host -> address
  case $1 in
    n*) echo "10.201.${1#n}.2" ;;
    a*) echo "10.201.$((10 + ${1#a})).2" ;;
  esac
}
hosts_in() { local r=$1 h; for h in "${HOSTS[@]}"; do [ "${REGION_OF[$h]}" = "$r" ] && echo "$h"; done; }

need_root() { [ "$(id -u)" -eq 0 ] || { echo "multi-region.sh: run as root (network namespaces, iptables)" >&2; exit 2; }; }

cut_region() {
  need_root
  local region=$1 h addr
  [ -n "$(hosts_in "$region")" ] || { echo "unknown region $region (south, west, north)" >&2; exit 2; }
  for h in $(hosts_in "$region"); do
    addr=$(ip_of "$h")
    ip netns exec $RT iptables -I FORWARD 1 -s "$addr" -j DROP -m comment --comment "$P-cut-$region"
    ip netns exec $RT iptables -I FORWARD 1 -d "$addr" -j DROP -m comment --comment "$P-cut-$region"
  done
}

heal_region() {
  need_root
  local region=$1 rules rule
  # Read the whole rule list first: `iptables -S | grep -m1` under pipefail fails on
  # SIGPIPE and would silently leave the cut in place.
  rules=$(ip netns exec $RT iptables -S FORWARD)
  while IFS= read -r rule; do
    case "$rule" in
      *"--comment $P-cut-$region "*)
        # shellcheck disable=SC2086
        ip netns exec $RT iptables ${rule/-A /-D } ;;
    esac
  done <<< "$rules"
  rules=$(ip netns exec $RT iptables -S FORWARD)
  if grep -q -- "--comment $P-cut-$region " <<< "$rules"; then
    echo "multi-region.sh: region $region is still cut off" >&2
    return 1
  fi
}

case "${1:-run}" in
  cut) cut_region "$2"; exit 0 ;;
  heal) heal_region "$2"; exit 0 ;;
  run) ;;
  *) echo "usage: $0 [run | cut REGION | heal REGION]" >&2; exit 2 ;;
esac

need_root
started=$(date +%s)
say() { echo "== [$(( $(date +%s) - started ))s] $*"; }
work=$(mktemp -d /tmp/$P.XXXXXX)
pids=()
cleanup() {
  local status=$?
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$ns"; done
  rm -rf "$STATE"
  if [ $status -ne 0 ]; then
    echo "multi-region.sh: failed (status $status); logs kept in $work" >&2
  else
    rm -rf "$work/data"
    echo "logs and figures in $work"
  fi
  exit $status
}
trap cleanup EXIT INT TERM

if ip netns list | grep -q "^$P-"; then
  echo "multi-region.sh: namespaces $P-* exist (another run, or a crashed one): removing them" >&2
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$ns"; done
fi

say "tools"
command -v iptables >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null; }
for tool in curl jq openssl python3; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null; }
done
target="${CARGO_TARGET_DIR:-$repo/target}"
if [ -n "${MULTI_REGION_NO_BUILD:-}" ]; then
  say "using the binaries already in $target/debug (MULTI_REGION_NO_BUILD)"
else
  say "building raft-node, api, bookingctl (dev profile; RocksDB itself is optimised)"
  (cd "$repo" && cargo build -q -p raft-node -p api --bins)
fi
bin="$target/debug"
for b in raft-node api bookingctl; do [ -x "$bin/$b" ] || { echo "missing $bin/$b" >&2; exit 1; }; done

say "network: router namespace, one namespace per node"
ip netns add $RT
ip -n $RT link set lo up
ip netns exec $RT sysctl -qw net.ipv4.ip_forward=1
for h in "${HOSTS[@]}"; do
  ns=$P-$h; addr=$(ip_of "$h"); gw=${addr%.2}.1
  ip netns add "$ns"
  ip link add "$P-$h" type veth peer name eth0 netns "$ns"
  ip link set "$P-$h" netns $RT
  ip -n $RT addr add "$gw/24" dev "$P-$h"
  ip -n $RT link set "$P-$h" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$gw"
done

say "delays by region pair"
mode=""
if ip netns exec $RT tc qdisc add dev "$P-n1" root netem delay 1ms 2>/dev/null; then
  ip netns exec $RT tc qdisc del dev "$P-n1" root
  mode=netem
  # netem on each router port: the port's egress carries the traffic *to* its host, so
  # an htb class per source host with a netem leaf of that pair's one-way delay.
  for dst in "${HOSTS[@]}"; do
    dev=$P-$dst
    ip netns exec $RT tc qdisc add dev "$dev" root handle 1: htb default 99
    ip netns exec $RT tc class add dev "$dev" parent 1: classid 1:99 htb rate 10gbit
    i=1
    for src in "${HOSTS[@]}"; do
      [ "$src" = "$dst" ] && continue
      d=$(delay_ms "${REGION_OF[$src]}" "${REGION_OF[$dst]}")
      ip netns exec $RT tc class add dev "$dev" parent 1: classid 1:$i htb rate 10gbit
      ip netns exec $RT tc qdisc add dev "$dev" parent 1:$i netem delay "${d}ms"
      ip netns exec $RT tc filter add dev "$dev" parent 1: protocol ip u32 match ip src "$(ip_of "$src")/32" flowid 1:$i
      i=$((i + 1))
    done
  done
else
  mode=nfqueue
  venv="${SEAT_LEDGER_CACHE:-/var/cache/seat-ledger}/netem-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import fnfqueue' 2>/dev/null; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "fnfqueue==1.1.2"
  fi
  declare -A queue_of=()
  for src in "${HOSTS[@]}"; do
    for dst in "${HOSTS[@]}"; do
      [ "$src" = "$dst" ] && continue
      d=$(delay_ms "${REGION_OF[$src]}" "${REGION_OF[$dst]}")
      queue_of[$d]=1
      ip netns exec $RT iptables -A FORWARD -s "$(ip_of "$src")" -d "$(ip_of "$dst")" \
        -j NFQUEUE --queue-num "$d"
    done
  done
  for d in "${!queue_of[@]}"; do
    ip netns exec $RT "$venv/bin/python" "$here/netem-nfqueue.py" "$d" "$d" > "$work/delayer-$d.log" 2>&1 &
    pids+=($!)
  done
  sleep 1
fi
mkdir -p "$STATE"
echo "$mode" > "$STATE/mode"
say "delay mode: $mode"

rtt() { # from-host to-host: TCP connect time in ms (median of 5)
  ip netns exec "$P-$1" python3 - "$(ip_of "$2")" <<'PY'
import socket, statistics, sys, time
host = sys.argv[1]
samples = []
for _ in range(5):
    started = time.perf_counter()
    try:
        socket.create_connection((host, 9), timeout=2).close()
    except ConnectionRefusedError:
        pass
    samples.append((time.perf_counter() - started) * 1000)
print(f"{statistics.median(samples):.1f}")
PY
}
say "measured RTT (TCP connect to a closed port, median of 5): n1-n2 $(rtt n1 n2) ms, n1-n3 $(rtt n1 n3) ms, n1-n5 $(rtt n1 n5) ms, n3-n5 $(rtt n3 n5) ms"

say "cluster: 5 raft-nodes (south: 1 2, west: 3 4, north: 5), shards mumbai, global, drill"
mkdir -p "$work/data"
cluster="$work/cluster.toml"
{
  echo 'cluster_id = "multi-region"'
  for k in 1 2 3 4 5; do
    printf '[[nodes]]\nid = %d\npeer_addr = "%s:7000"\nclient_addr = "%s:8000"\nregion = "%s"\n' \
      $k "$(ip_of n$k)" "$(ip_of n$k)" "${REGION_OF[n$k]}"
  done
  for s in mumbai global drill; do printf '[[shards]]\nname = "%s"\nmembers = [1, 2, 3, 4, 5]\n' $s; done
} > "$cluster"
for k in 1 2 3 4 5; do
  ip netns exec "$P-n$k" env SEAT_LEDGER_CLUSTER_SECRET="$SECRET" RUST_LOG=warn \
    "$bin/raft-node" --node-id $k --cluster "$cluster" --data-dir "$work/data/n$k" \
    > "$work/n$k.log" 2>&1 &
  pids+=($!)
done
nodes_arg=$(for k in 1 2 3 4 5; do printf '%d=%s:8000,' $k "$(ip_of n$k)"; done); nodes_arg=${nodes_arg%,}
export BOOKINGCTL_NODES=$nodes_arg
ready=""
for _ in $(seq 1 100); do
  ok=0
  for k in 1 2 3 4 5; do
    ip netns exec $RT curl -fsS -m 1 "http://$(ip_of n$k):8000/health/ready" >/dev/null 2>&1 && ok=$((ok + 1))
  done
  [ $ok -eq 5 ] && { ready=1; break; }
  sleep 0.3
done
[ -n "$ready" ] || { echo "nodes not ready within 30 s; see $work/n*.log" >&2; exit 1; }
ip netns exec $RT "$bin/bookingctl" status

say "api nodes: one per region"
openssl genpkey -algorithm ed25519 -out "$work/jwt.pem" 2>/dev/null
openssl pkey -in "$work/jwt.pem" -pubout -out "$work/jwt.pub.pem"
for j in 1 2 3; do
  region=${REGION_OF[a$j]}
  {
    printf 'listen = "%s:8080"\nregion = "%s"\n' "$(ip_of a$j)" "$region"
    echo 'nodes = ['
    for k in 1 2 3 4 5; do printf '  { id = %d, client_addr = "%s:8000", region = "%s" },\n' $k "$(ip_of n$k)" "${REGION_OF[n$k]}"; done
    echo ']'
    echo 'cities = [{ id = "mumbai", name = "Mumbai", shard = "mumbai" }]'
    printf '[limits]\nrequests_per_second = 1000\nburst = 1000\n'
    printf '[jwt]\nsigning_key_file = "%s"\nverifying_key_files = { k1 = "%s" }\n' "$work/jwt.pem" "$work/jwt.pub.pem"
  } > "$work/api-$j.toml"
  ip netns exec "$P-a$j" env RUST_LOG=warn "$bin/api" serve --config "$work/api-$j.toml" > "$work/a$j.log" 2>&1 &
  pids+=($!)
done
for j in 1 2 3; do
  for _ in $(seq 1 50); do
    ip netns exec "$P-a$j" curl -fsS -m 1 "http://$(ip_of a$j):8080/health/live" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

say "leaders of drill and mumbai in south (node 1)"
ip netns exec $RT "$bin/bookingctl" leader transfer --shard drill --to 1
ip netns exec $RT "$bin/bookingctl" leader transfer --shard mumbai --to 1

local_node() { case $1 in south) echo 1 ;; west) echo 3 ;; north) echo 5 ;; esac; }
api_of() { case $1 in south) echo a1 ;; west) echo a2 ;; north) echo a3 ;; esac; }
say "latency from each region (bookingctl probe: 30 writes, 30 reads each; the leader is node 1 in south)"
: > "$work/probe.jsonl"
for r in "${REGIONS[@]}"; do
  ip netns exec "$P-$(api_of "$r")" timeout 120 "$bin/bookingctl" probe --shard drill \
    --local-node "$(local_node "$r")" --writes 30 --reads 30 --label "$r" >> "$work/probe.jsonl"
done
printf '%-6s %-5s %-22s %-22s %-22s %-22s\n' region local "write p50/p99 ms" "stale@local p50/p99" "lin@local p50/p99" "lin@leader p50/p99"
jq -r '[.label, (.local_node|tostring),
        "\(.write.p50_ms|floor)/\(.write.p99_ms|floor)",
        "\(.stale_local.p50_ms*10|floor/10)/\(.stale_local.p99_ms*10|floor/10)",
        "\(.linearizable_local.p50_ms|floor)/\(.linearizable_local.p99_ms|floor)",
        "\(.linearizable_leader.p50_ms|floor)/\(.linearizable_leader.p99_ms|floor)"] | @tsv' \
  "$work/probe.jsonl" | while IFS=$'\t' read -r a b c d e f; do printf '%-6s %-5s %-22s %-22s %-22s %-22s\n' "$a" "$b" "$c" "$d" "$e" "$f"; done

say "api reads from each region (GET /api/v1/shows?location=mumbai, 20 each, curl time_total)"
for r in "${REGIONS[@]}"; do
  a=$(api_of "$r")
  for level in stale linearizable; do
    times=$(for _ in $(seq 1 20); do
      ip netns exec "$P-$a" curl -s -o /dev/null -w '%{time_total}\n' -m 5 \
        "http://$(ip_of "$a"):8080/api/v1/shows?location=mumbai&consistency=$level"
    done | sort -n)
    echo "$times" | awk -v r="$r" -v l="$level" '{ t[NR] = $1 * 1000 } END { printf "  %-6s %-13s p50 %6.1f ms  p95 %6.1f ms  (n=%d)\n", r, l, t[int(NR / 2)], t[int(NR * 0.95)], NR }'
  done
done | tee "$work/api-reads.txt"

say "region loss: cut south (the drill leader's region) off under writes from west"
ip netns exec "$P-a2" timeout 120 "$bin/bookingctl" drill isolate-region --shard drill --region south \
  --seconds 12 --writers 4 --cut "$here/multi-region.sh cut south" --heal "$here/multi-region.sh heal south" | tee "$work/isolate.txt"
say "after healing: waiting until every node follows one leader again (at most 60 s)"
healed=""
for i in $(seq 1 120); do
  if ip netns exec $RT "$bin/bookingctl" status --json --shard drill 2>/dev/null \
      | jq -e '.shards[0] as $s | ([$s.members[] | select(.role == "leader")] | length) == 1
               and ([$s.members[] | (.lag // 0)] | max) < 50' >/dev/null; then
    healed=$i; break
  fi
  sleep 0.5
done
ip netns exec $RT "$bin/bookingctl" status --shard drill
if [ -n "$healed" ]; then
  say "one leader and all members caught up about $(( healed / 2 )) s after healing"
else
  say "the cluster had not settled 60 s after healing (see the status above)"
fi
say "done in $(( $(date +%s) - started )) s (delay mode: $mode)"
