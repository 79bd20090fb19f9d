#!/usr/bin/env bash
# Build optx in release mode and run the Slurm benchmark (see slurm.py) on a local
# single-node Slurm started for it (scripts/slurm-local.sh), or on the one SLURM_CONF names.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p optx
if [ -z "${SLURM_CONF:-}" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/optx-bench-slurm.XXXXXX")
  trap 'bash scripts/slurm-local.sh down "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
  SLURM_CONF=$(bash scripts/slurm-local.sh up "$dir" | sed -n 's/^export SLURM_CONF=//p')
  export SLURM_CONF
fi
python3 bench/slurm.py target/release/optx "$@"
