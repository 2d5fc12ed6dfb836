#!/usr/bin/env bash
# The project's test command (README): installs what the build needs, then runs every
# test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --locked "$@"
