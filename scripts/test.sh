#!/usr/bin/env bash
# The whole test suite. The server-store tests need a PostgreSQL server: this starts a
# throw-away one (scripts/pg-server.sh) in a temp dir on loopback, and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d "${TMPDIR:-/tmp}/optx-pg.XXXXXX")
trap 'bash scripts/pg-server.sh stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
OPTX_TEST_PG_URL=$(bash scripts/pg-server.sh start "$dir")
export OPTX_TEST_PG_URL OPTX_TEST_PG_DIR="$dir"
cargo build --workspace
cargo test --workspace "$@"
