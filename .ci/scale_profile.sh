#!/usr/bin/env bash
# Run the test suite on the scale profile: a throwaway PostgreSQL cluster and a Redis
# cache
# server, both started here on loopback ports and stopped on exit whatever happened.
# Usage: .ci/scale_profile.sh [pytest args…]   (default: the whole suite, then the fault
# suite, tests/faults, as a step of its own)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-$ROOT/.venv/bin/python}

# Starts both servers, exports DATABASE_URL and CACHE_URL, stops them on exit.
. .ci/scale_services.sh

if [ $# -gt 0 ]; then
  echo "== tests on PostgreSQL + Redis: $*"
  "$PY" -m pytest "$@"
  exit
fi
echo "== test suite on PostgreSQL + Redis"
"$PY" -m pytest --ignore=tests/faults
# Its own step: these restart PostgreSQL and stop Redis under running processes, so they
# run after the rest, never beside it; they need the servers this script started.
echo "== fault suite on PostgreSQL + Redis (database restart, cache stop, dropped connection)"
"$PY" -m pytest tests/faults
