#!/usr/bin/env bash
# Run the benchmarks on the scale profile: a throwaway PostgreSQL cluster and Redis
# server (the same ones .ci/scale_profile.sh starts for the test suite), stopped on exit.
# Figures go to the "postgresql+redis" section of bench/results.json, beside the
# embedded profile's "sqlite+orm" section written by `make bench`.
# Usage: bench/scale_profile.sh [run_all options: --quick, --only a,b, --skip c…]
#        PG_PORT=… REDIS_PORT=… to choose the ports (defaults 55442 and 56389).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PG_PORT=${PG_PORT:-55442}
REDIS_PORT=${REDIS_PORT:-56389}

. .ci/scale_services.sh

# Each benchmark makes its own database on this server (see bench/common.py).
export BENCH_DATABASE_URL="$DATABASE_URL"
echo "== benchmarks on PostgreSQL + Redis"
"$PY" bench/run_all.py "$@"
