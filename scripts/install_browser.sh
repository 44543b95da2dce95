#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages) for tests/app/test_browser.py.
# Idempotent: does nothing when both binaries are already there. Quiet: apt's output is shown
# only when a step fails.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_browser.sh: could not install chromium and chromium-driver" >&2
    exit 1
fi
echo "installed: $(/usr/bin/chromium --version 2>/dev/null), $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
