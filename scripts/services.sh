#!/usr/bin/env bash
# Starts or stops a private PostgreSQL 15 and Redis on loopback, with their data
# under DIR. Used by scripts/run.sh and scripts/test.sh when no DATABASE_URL /
# REDIS_URL is given.
#
#   scripts/services.sh start DIR PG_PORT REDIS_PORT [--fast]   prints `export …` lines
#   scripts/services.sh stop DIR
#
# --fast turns fsync off (tests only; the benchmark and `run` keep PostgreSQL's
# default durability). Only processes this script started are stopped, by PID.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: services.sh start|stop DIR ...}
dir=${2:?DIR missing}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

as_pg() {
  # initdb and postgres refuse to run as root: use the postgres account then.
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local pg_port=${1:?PG_PORT missing} redis_port=${2:?REDIS_PORT missing} fast=${3:-}
  local pgdata=$dir/pg
  # Refuse a port held by a server we did not start, before starting anything.
  if ! { [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; } &&
     redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "services.sh: port $redis_port already has a Redis that this script did not start; stop it or pick another port" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    # The postgres account must be able to reach the data folder.
    local d=$dir
    while [ "$d" != "/" ]; do chmod o+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pgdata"
    as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  local opts="-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$pgdata -c max_connections=300 -c shared_buffers=256MB"
  [ "$fast" != "--fast" ] || opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    if pg_isready -q -h 127.0.0.1 -p "$pg_port"; then
      echo "services.sh: port $pg_port already has a PostgreSQL that this script did not start; stop it or pick another port" >&2
      exit 1
    fi
    # A port held in TIME_WAIT (see Redis below): try again, up to 90 s.
    local pg_tries=0
    until as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 -o "$opts" start >/dev/null 2>&1; do
      if ((pg_tries++ >= 90)) || ! tail -n 5 "$pgdata/server.log" | grep -q "could not bind"; then
        tail -n 30 "$pgdata/server.log" >&2
        exit 1
      fi
      ((pg_tries > 1)) || echo "services.sh: port $pg_port is not free yet; trying again for up to 90 s" >&2
      sleep 1
    done
  fi
  mkdir -p "$dir/redis"
  # The ports are in Linux's ephemeral range: a connection another program
  # closed can hold one in TIME_WAIT for a minute, and Redis cannot bind it
  # meanwhile. A Redis that could not bind is started again, once a second
  # for up to 90 s, before giving up with its log.
  local tries=0
  while ! { [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; }; do
    if ((tries++ >= 90)); then
      echo "services.sh: Redis did not start on port $redis_port:" >&2
      tail -n 3 "$dir/redis.log" >&2
      exit 1
    fi
    ((tries == 1)) || sleep 1
    rm -f "$dir/redis.pid"
    # In the background rather than --daemonize, so its exit is seen at once.
    # noeviction: an evicting policy would silently drop queued jobs.
    setsid redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --daemonize no \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" --appendonly no \
      --maxmemory-policy noeviction </dev/null >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 50); do
      redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  echo "export DATABASE_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres"
  echo "export REDIS_URL=redis://127.0.0.1:$redis_port"
}

stop() {
  if [ -f "$dir/pg/PG_VERSION" ]; then as_pg "$PG_BIN/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true; fi
  if [ -f "$dir/redis.pid" ]; then
    local pid
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    # Wait for it to let go of its port, so a start right after finds it free.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/redis.pid"
  fi
}

case "$cmd" in
  start) shift 2; start "$@" ;;
  stop) stop ;;
  *) echo "services.sh: unknown command '$cmd' (start|stop)" >&2; exit 2 ;;
esac
