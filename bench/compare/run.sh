#!/usr/bin/env bash
# The same workload on jobhost, graphile-worker and BullMQ, on this machine, in
# one run: `jobctl bench`, then graphile.mjs, then bullmq.mjs, against a
# PostgreSQL (default durability) and Redis that this script starts on loopback
# (ports 55200 / 56200, data under build/compare-services) and stops.
#
#   bash bench/compare/run.sh [JOBS]        from the repository root; JOBS defaults to 100000
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
jobs=${1:-100000}
[ -x build/bin/jobctl ] || { echo "run.sh: build first: cmake -S . -B build && cmake --build build -j2" >&2; exit 1; }

command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "run.sh: needs Node.js (20 or later) and npm on PATH" >&2; exit 1; }
if [ ! -d bench/compare/node_modules ]; then
  (cd bench/compare && npm ci --no-audit --no-fund --loglevel=error)
fi

svc=$root/build/compare-services
exports=$(bash scripts/services.sh start "$svc" 55200 56200)
trap 'bash "$root/scripts/services.sh" stop "$svc"' EXIT
eval "$exports"
export DATABASE_URL REDIS_URL

out=$(mktemp)
trap 'rm -f "$out"; bash "$root/scripts/services.sh" stop "$svc"' EXIT
ver() { node -e "console.log(require('./bench/compare/node_modules/$1/package.json').version)"; }
{
  echo "machine     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "versions    $(psql "$DATABASE_URL" -Atc 'SHOW server_version'), redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), node $(node --version), graphile-worker $(ver graphile-worker), bullmq $(ver bullmq)"
  echo "postgresql  synchronous_commit=$(psql "$DATABASE_URL" -Atc 'SHOW synchronous_commit'), fsync=$(psql "$DATABASE_URL" -Atc 'SHOW fsync')"
  echo "redis       appendonly=$(redis-cli -u "$REDIS_URL" config get appendonly | tail -1), save='$(redis-cli -u "$REDIS_URL" config get save | tail -1)' (BullMQ's jobs live only here)"
} | tee "$out"

echo; echo "== jobhost"
timeout 900 build/bin/jobctl bench --jobs "$jobs" | sed 's/^/jobhost   /' | tee -a "$out"

echo; echo "== graphile-worker"
db=graphile_bench_$$
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
gw_url=$(echo "$DATABASE_URL" | sed "s#/[^/]*\$#/$db#")
DATABASE_URL=$gw_url timeout 900 node bench/compare/graphile.mjs --jobs="$jobs" | sed 's/^/graphile  /' | tee -a "$out"
psql "$DATABASE_URL" -qc "DROP DATABASE $db"

echo; echo "== BullMQ"
BULLMQ_PREFIX=bullmq_bench_$$ timeout 900 node bench/compare/bullmq.mjs --jobs="$jobs" | sed 's/^/bullmq    /' | tee -a "$out"

# The same with every write to Redis fsynced before it is acknowledged, as
# jobhost's PostgreSQL commits are: BullMQ at jobhost's durability.
echo; echo "== BullMQ, appendonly yes, appendfsync always"
redis-cli -u "$REDIS_URL" config set appendfsync always >/dev/null
redis-cli -u "$REDIS_URL" config set appendonly yes >/dev/null
for _ in $(seq 1 100); do
  redis-cli -u "$REDIS_URL" info persistence | grep -q '^aof_rewrite_in_progress:0' && break
  sleep 0.1
done
BULLMQ_PREFIX=bullmq_bench_$$ timeout 900 node bench/compare/bullmq.mjs --jobs="$jobs" | sed 's/^/bullmq-aof /' | tee -a "$out"
redis-cli -u "$REDIS_URL" config set appendonly no >/dev/null

echo; echo "== summary ($jobs jobs; drain in jobs/s; creation -> handler start at 1000/s in ms)"
printf '%-11s %10s %10s %8s %8s %8s\n' system enqueue drain p50 p99 max
for s in jobhost graphile bullmq bullmq-aof; do
  awk -v s="$s" '
    $1 == s && $2 == "enqueue" { for (i = 1; i <= NF; i++) if ($i == "=") enq = $(i + 1) }
    $1 == s && $2 == "drain"   { for (i = 1; i <= NF; i++) if ($i == "=") drn = $(i + 1) }
    $1 == s && $2 == "latency" { for (i = 1; i <= NF; i++) { if ($i == "p50") p50 = $(i + 1); if ($i == "p99") p99 = $(i + 1); if ($i == "max") mx = $(i + 1) } }
    END { printf "%-11s %10s %10s %8s %8s %8s\n", s, enq, drn, p50, p99, mx }' "$out"
done
