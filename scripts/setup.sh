#!/usr/bin/env bash
# Installs what building and testing the project needs on a clean Debian machine:
# libclang for the RocksDB bindings (bindgen), a C++ compiler for RocksDB itself, and
# iproute2 for the Jepsen-style suite's network namespaces and partitions, and ccache
# so that RocksDB's C++ is compiled once however many cargo commands need it.
# Safe to run again; it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ccache >/dev/null 2>&1 || need+=(ccache)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing ${need[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Headless Chromium and its WebDriver for the browser tests of the web pages.
[ -x scripts/setup-browser.sh ] && ./scripts/setup-browser.sh
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing; install Rust with rustup" >&2; exit 1; }
