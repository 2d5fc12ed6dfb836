#!/usr/bin/env bash
# Bounded coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every decoder of untrusted
# bytes: peer frames and payloads, ledger commands, snapshots, REST requests.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#   scripts/fuzz.sh --seeds                              (rewrite the seed corpus)
#
# Builds with the stable toolchain (RUSTC_BOOTSTRAP enables the flags libFuzzer needs).
# Replays fuzz/regressions/<target>/ first (each file is an input that once crashed),
# then fuzzes from the committed seeds in fuzz/corpus/<target>/ into a scratch corpus.
# Crashing inputs are saved under runs/fuzz/<target>/ and the script exits 1.
# Prints executions and crashes per target.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

seeds=false
[ "${1:-}" = "--seeds" ] && { seeds=true; shift; }
secs="${1:-60}"
shift || true
case "$secs" in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a whole number, got '$secs'" >&2; exit 2 ;; esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

all_targets=(peer_frame peer_payload ledger_commands snapshot rest_request)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

export RUSTC_BOOTSTRAP=1
# No sanitizer: the fuzzed code is safe Rust (RocksDB's C++ is not instrumented either);
# panics, aborts, timeouts and memory blow-ups are what the targets look for.
# Default cargo-fuzz build: optimised, with debug assertions and overflow checks.
fuzz_build=(cargo fuzz build --fuzz-dir fuzz -s none)
"${fuzz_build[@]}"
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/x86_64-unknown-linux-gnu/release"
if $seeds; then
  exec "$bin_dir/write_seeds" -runs=0
fi

failed=0
summary=()
for target in "${targets[@]}"; do
  out="runs/fuzz/$target"
  scratch="$(mktemp -d)"
  rm -rf "$out"
  mkdir -p "$out" "fuzz/corpus/$target" "fuzz/regressions/$target"
  if compgen -G "fuzz/regressions/$target/*" >/dev/null; then
    if ! "$bin_dir/$target" -runs=0 "fuzz/regressions/$target"/* >"$out/regressions.log" 2>&1; then
      echo "fuzz.sh: $target: a regression input crashes again (runs/fuzz/$target/regressions.log)" >&2
      tail -20 "$out/regressions.log" >&2
      failed=1
    fi
  fi
  log="$out/fuzz.log"
  set +e
  "$bin_dir/$target" "$scratch" "fuzz/corpus/$target" \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$out/" $( [ -f "fuzz/dicts/$target.dict" ] && echo "-dict=fuzz/dicts/$target.dict" ) \
    >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  crashes=$(find "$out" -maxdepth 1 -name 'crash-*' -o -maxdepth 1 -name 'oom-*' -o -maxdepth 1 -name 'timeout-*' | wc -l)
  summary+=("$target: ${secs} s, ${execs} executions, corpus $(ls "$scratch" | wc -l) new units, ${crashes} crash/oom/timeout inputs, exit $rc")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    echo "fuzz.sh: $target failed (exit $rc); inputs in $out/; tail of its log:" >&2
    tail -30 "$log" >&2
    failed=1
  fi
  rm -rf "$scratch"
done
printf '%s\n' "fuzz summary:" "${summary[@]/#/  }"
exit "$failed"
