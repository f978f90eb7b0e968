#!/usr/bin/env bash
# Sets up, builds and runs every test: unit tests, then integration and
# end-to-end tests against a private PostgreSQL and Redis on loopback that this
# script starts (ports 55432 / 56379, data under build/test-services) and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/build.sh
# The dashboard test's browser driver, pinned by tests/dashboard/package-lock.json.
if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
  (cd tests/dashboard && timeout 600 npm ci --no-audit --no-fund --loglevel=error)
fi

svc=$root/build/test-services
rm -rf "$svc"
# Assigned first, so set -e stops here when the services cannot start.
exports=$(bash scripts/services.sh start "$svc" 55432 56379 --fast)
eval "$exports"
trap 'bash "$root/scripts/services.sh" stop "$svc"' EXIT
export DATABASE_URL REDIS_URL
export JOBHOST_TEST_PG_DATA="$svc"

cd build
ctest --output-on-failure --timeout 600 -j1 "$@"
