#!/usr/bin/env bash
# Build optx in release mode and run the workers benchmark (see workers.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
python3 bench/workers.py target/release/optx "$@"
