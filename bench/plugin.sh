#!/usr/bin/env bash
# Build optx, the hartmann6 plugin and the ABI-call example in release mode, then measure
# the cost of one plugin call and the plugin runner's throughput (see plugin.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx -p optx-plugin-hartmann6 --example plugin_call
target/release/examples/plugin_call target/release/liboptx_hartmann6.so
python3 bench/plugin.py target/release/optx target/release/liboptx_hartmann6.so "$@"
