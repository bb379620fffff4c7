#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for the browser e2e test (tests/e2e/test_browser.py).
# Idempotent; needs root or sudo. Prints the browser version.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version
