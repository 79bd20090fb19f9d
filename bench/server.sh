#!/usr/bin/env bash
# Build optx in release mode, start a throw-away PostgreSQL server (scripts/pg-server.sh),
# run the server-store benchmark (see server.py) against it and SQLite, stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
dir=$(mktemp -d "${TMPDIR:-/tmp}/optx-bench-pg.XXXXXX")
trap 'bash scripts/pg-server.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
OPTX_BENCH_PG_URL=$(bash scripts/pg-server.sh start "$dir")
export OPTX_BENCH_PG_URL
python3 bench/server.py target/release/optx "$@"
