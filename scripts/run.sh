#!/usr/bin/env bash
# Sets up and runs jobhost with config/jobhost.yaml (or the config given as $1).
# Without DATABASE_URL / REDIS_URL it starts a private PostgreSQL and Redis on
# loopback with their data under .data/, and stops them when jobhost exits.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-config/jobhost.yaml}
bash scripts/build.sh

started=""
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  exports=$(bash scripts/services.sh start .data 54329 63799)  # set -e stops here on failure
  eval "$exports"
  started=1
  trap 'bash scripts/services.sh stop .data' EXIT
fi
export DATABASE_URL REDIS_URL
build/bin/jobctl db migrate
echo "jobhost: running with $config (DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL); Ctrl-C stops it"
echo "jobhost: try   DATABASE_URL=$DATABASE_URL build/bin/jobctl enqueue noop '{}'"
build/bin/jobhost --config "$config" &
pid=$!
finish() {
  # Under set -e: kill and wait fail once jobhost has exited and been reaped.
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -z "$started" ] || bash scripts/services.sh stop .data
}
trap finish EXIT INT TERM
wait $pid
