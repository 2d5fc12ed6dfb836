#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`)
# for the api's browser tests (`cargo test -p api --test browser`). Safe to run again: it
# installs only what is missing, never asks questions, and uses sudo when not root.
set -euo pipefail

need=()
for package in chromium chromium-driver; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "setup-browser: need root or sudo to install ${need[*]}" >&2
      exit 1
    }
    sudo_cmd="sudo -n"
  fi
  echo "setup-browser: installing ${need[*]}"
  # Another installer may hold dpkg's lock for a while: wait for it rather than fail.
  wait_lock=(-o DPkg::Lock::Timeout=600)
  $sudo_cmd apt-get "${wait_lock[@]}" update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq \
    --no-install-recommends "${need[@]}" >/dev/null
fi
# Both binaries must be on PATH where the tests look for them.
for binary in chromium chromedriver; do
  command -v "$binary" >/dev/null 2>&1 || {
    echo "setup-browser: $binary is not on PATH after installing" >&2
    exit 1
  }
done
echo "setup-browser: $(chromium --version 2>/dev/null | head -n1); $(chromedriver --version | head -n1)"
