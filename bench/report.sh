#!/usr/bin/env bash
# Build optx in release mode, find (or install) headless Chromium, and run the report and
# status benchmark (see report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
python3 bench/report.py target/release/optx "$(bash scripts/chromium.sh)" "$@"
