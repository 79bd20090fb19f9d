#!/usr/bin/env bash
# Build optx and the job-queue plugin in release mode and run the in-flight benchmark
# (see inflight.py).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx -p optx-plugin-job-queue
python3 bench/inflight.py target/release/optx target/release/liboptx_job_queue.so "$@"
