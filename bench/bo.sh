#!/usr/bin/env bash
# Build optx, the plugins and the examples in release mode, then run the Bayesian
# optimization benchmark (quality over seeds, then proposal speed; see bo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --lib --bins --examples
python3 bench/bo.py "$@"
