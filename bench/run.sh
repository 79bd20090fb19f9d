#!/usr/bin/env bash
# Build optx in release mode and run the orchestration benchmark (see orchestration.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
python3 bench/orchestration.py target/release/optx "$@"
