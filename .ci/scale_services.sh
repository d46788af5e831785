# Start a throwaway PostgreSQL cluster and a Redis server on loopback ports, export
# DATABASE_URL and CACHE_URL (Redis is the shared cache; the queue is the database)
# pointing at them, and stop both on exit whatever happened.
# Sourced (not run) by .ci/scale_profile.sh (the test suite) and bench/scale_profile.sh
# (the benchmarks), after `set -euo pipefail`:
#
#   PG_PORT=55432 REDIS_PORT=56379 . .ci/scale_services.sh
#
# It installs redis-server and PostgreSQL with apt-get when they are missing, and sets
# the shell's EXIT trap (a caller needing its own cleanup calls scale_services_stop).
#
# For the fault suite (tests/faults), which restarts and stops these servers, it also
# exports where they live: PGDATA, PG_BIN, PG_PORT, PG_AS (the command prefix that runs
# a PostgreSQL tool as its owner: empty, or `runuser -u postgres --` as root),
# REDIS_PORT and SCALE_WORK (pid and log files); `as_pg` is exported to sub-shells too.
PG_PORT=${PG_PORT:-55432}
REDIS_PORT=${REDIS_PORT:-56379}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$PG_BIN" ] || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

SCALE_WORK=$(mktemp -d /tmp/orchestrator-scale.XXXXXX)
chmod 755 "$SCALE_WORK"
PGDATA="$SCALE_WORK/pgdata"
scale_services_stop() {
  set +e
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
  [ -f "$SCALE_WORK/redis.pid" ] && kill "$(cat "$SCALE_WORK/redis.pid")" 2>/dev/null
  rm -rf "$SCALE_WORK" 2>/dev/null || { sleep 1; rm -rf "$SCALE_WORK"; }
}
trap scale_services_stop EXIT

# PostgreSQL refuses to run as root: run it as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$SCALE_WORK"; fi

echo "== starting PostgreSQL on 127.0.0.1:$PG_PORT"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U orchestrator --auth=trust -E UTF8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$SCALE_WORK/pg.log" -w \
  -o "-p $PG_PORT -k $SCALE_WORK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U orchestrator orchestrator

echo "== starting Redis on 127.0.0.1:$REDIS_PORT"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --pidfile "$SCALE_WORK/redis.pid" --logfile "$SCALE_WORK/redis.log"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

export PGDATA PG_BIN PG_PORT REDIS_PORT SCALE_WORK
if [ "$(id -u)" = 0 ]; then export PG_AS="runuser -u postgres --"; else export PG_AS=""; fi
export -f as_pg
export DATABASE_URL="postgres://orchestrator@127.0.0.1:$PG_PORT/orchestrator"
export CACHE_URL="redis://127.0.0.1:$REDIS_PORT/0"
# The benchmarks' baseline, bare django-q2 on its own Redis broker, uses another db.
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/1"
