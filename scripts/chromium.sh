#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium, installing Debian's `chromium` package
# first if it is missing (as root). The report tests render optx's HTML report in it.
set -euo pipefail
for c in chromium chromium-browser google-chrome; do
  if p=$(command -v "$c" 2>/dev/null); then
    echo "$p"
    exit 0
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "chromium.sh: Chromium is not installed: apt-get install chromium (as root)" >&2
  exit 1
fi
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium
