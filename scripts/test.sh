#!/usr/bin/env bash
# The project's test command (README): installs what the build needs, then runs every
# test of the workspace. The Jepsen-style suite runs in its own step, built with its
# test features (the clock-skew control and the planted bugs exist only in that build
# of the node). Extra arguments go to both `cargo test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. scripts/env.sh
cargo test --workspace --exclude jepsen-tests --locked "$@"
cargo test -p jepsen-tests --features planted-bugs --locked "$@"
