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
# The plugins' folders and mail relay (config/jobhost.yaml reads these). Unset,
# imports, exports and returned mail live under .data/, and email goes to a local smtp-sink
# that stores each message as a file under .data/mail/.
export JOBHOST_IMPORT_ROOT=${JOBHOST_IMPORT_ROOT:-$PWD/.data/imports}
export JOBHOST_EXPORT_ROOT=${JOBHOST_EXPORT_ROOT:-$PWD/.data/exports}
export JOBHOST_INBOUND_ROOT=${JOBHOST_INBOUND_ROOT:-$PWD/.data/inbound}  # a Maildir: bounces arrive in new/
mkdir -p "$JOBHOST_IMPORT_ROOT" "$JOBHOST_EXPORT_ROOT" "$JOBHOST_INBOUND_ROOT"/{new,cur,tmp}
pid="" sink=""
finish() {
  # Under set -e: kill and wait fail once a process has exited and been reaped.
  for p in $pid $sink; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pid $sink; do wait "$p" 2>/dev/null || true; done
  [ -z "$started" ] || bash scripts/services.sh stop .data
}
trap finish EXIT INT TERM
build/bin/jobctl db migrate
if [ -z "${JOBHOST_SMTP_URL:-}" ] && [ -x build/bin/smtp-sink ]; then
  mkdir -p .data/mail
  build/bin/smtp-sink --listen 127.0.0.1:2525 --maildir .data/mail &
  sink=$!
  export JOBHOST_SMTP_URL=smtp://127.0.0.1:2525
  echo "jobhost: email goes to a local smtp-sink on 127.0.0.1:2525, stored under .data/mail/"
fi
echo "jobhost: running with $config (DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL); Ctrl-C stops it"
echo "jobhost: try   DATABASE_URL=$DATABASE_URL build/bin/jobctl enqueue noop '{}'"
build/bin/jobhost --config "$config" &
pid=$!
wait $pid
