#!/usr/bin/env bash
# The whole test suite. The server-store tests need a PostgreSQL server and the Slurm tests
# a Slurm cluster: this starts a throw-away one of each (scripts/pg-server.sh,
# scripts/slurm-local.sh) in temp dirs on loopback, and stops them after. The report tests
# need a headless Chromium (scripts/chromium.sh installs Debian's if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d "${TMPDIR:-/tmp}/optx-pg.XXXXXX")
slurm=$(mktemp -d "${TMPDIR:-/tmp}/optx-slurm.XXXXXX")
cleanup() {
  bash scripts/pg-server.sh stop "$dir" >/dev/null 2>&1 || true
  bash scripts/slurm-local.sh down "$slurm" >/dev/null 2>&1 || true
  rm -rf "$dir" "$slurm"
}
trap cleanup EXIT
OPTX_TEST_PG_URL=$(bash scripts/pg-server.sh start "$dir")
export OPTX_TEST_PG_URL OPTX_TEST_PG_DIR="$dir"
conf=$(bash scripts/slurm-local.sh up "$slurm" | sed -n 's/^export SLURM_CONF=//p')
[ -n "$conf" ] || { echo "test.sh: the local Slurm did not start" >&2; exit 1; }
export SLURM_CONF="$conf"
OPTX_TEST_CHROMIUM=$(bash scripts/chromium.sh)
export OPTX_TEST_CHROMIUM
cargo build --workspace
# Every test binary runs (no stop at the first that fails), and the output ends on one line
# that says how it went.
log="$dir/test.log"
start=$SECONDS
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
sum() { grep -E '^test result:' "$log" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(sum passed)
failed=$(sum failed)
if [ "$status" = 0 ]; then
  echo "test.sh: all $passed tests passed in $((SECONDS - start)) s"
else
  echo "test.sh: FAILED: $failed of $((passed + failed)) tests failed (see above) in $((SECONDS - start)) s"
fi
exit "$status"
