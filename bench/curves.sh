#!/usr/bin/env bash
# Build optx in release mode, install scikit-learn if it is missing, and run the
# learning-curve benchmark of early stopping (see curves.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
python3 -c "import sklearn" 2>/dev/null || python3 -m pip install -q scikit-learn
python3 bench/curves.py target/release/optx "$@"
