#!/usr/bin/env bash
# Run the test suite on the scale profile: a throwaway PostgreSQL cluster and a Redis
# cache
# server, both started here on loopback ports and stopped on exit whatever happened.
# Usage: .ci/scale_profile.sh [pytest args…]   (default: the whole suite)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}

# Starts both servers, exports DATABASE_URL and CACHE_URL, stops them on exit.
. .ci/scale_services.sh

echo "== test suite on PostgreSQL + Redis"
"$PY" -m pytest "$@"
