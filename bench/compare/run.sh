#!/usr/bin/env bash
# The same workload on jobhost, graphile-worker, BullMQ and Sidekiq, on this
# machine, in one run: `jobctl bench`, then graphile.mjs, then bullmq.mjs, then
# sidekiq.rb, against a PostgreSQL (default durability) and Redis that this
# script starts on loopback (ports 55200 / 56200, data under
# build/compare-services) and stops. It installs the Node packages of
# package-lock.json when node_modules is missing, and Debian's ruby-sidekiq
# (with apt-get, under sudo when not root) when it is not installed.
#
#   bash bench/compare/run.sh [JOBS]        from the repository root; JOBS defaults to 100000
#
# Each system gets 64 concurrent handlers in one process (jobctl bench's 1 host
# x 64 workers), bulk enqueue in calls of 10,000, and, for the latency phase, a
# paced producer (1000 jobs/s for 10 s) in a process of its own. Sidekiq also
# runs as 2 processes of 32 threads (sidekiq-2p), the way it scales past Ruby's
# GIL; BullMQ and Sidekiq run again on Redis with appendfsync always (-aof).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
jobs=${1:-100000}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: JOBS must be a positive integer, got '$jobs'" >&2; exit 2; }
[ -x build/bin/jobctl ] || { echo "run.sh: build first: cmake -S . -B build && cmake --build build -j2" >&2; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null ||
  { echo "run.sh: needs Node.js (20 or later) and npm on PATH" >&2; exit 1; }
if [ ! -d bench/compare/node_modules ]; then
  # npm ci refuses a lock file that lacks the other platforms' builds of
  # msgpackr-extract (optional, under BullMQ), and a registry that does not serve
  # them writes such a lock; npm install --no-save then installs the lock's
  # versions without rewriting it.
  (cd bench/compare &&
    { timeout 600 npm ci --no-audit --no-fund --loglevel=error 2>/dev/null ||
      timeout 600 npm install --no-save --no-audit --no-fund --loglevel=error >/dev/null; })
fi
# Sidekiq as Debian 12 ships it (ruby-sidekiq 6.4.1, with Ruby and redis-rb),
# installed here and not by scripts/setup.sh: only this benchmark needs it.
if ! dpkg-query -W -f='${Status}' ruby-sidekiq 2>/dev/null | grep -q "install ok installed"; then
  echo "run.sh: installing ruby-sidekiq"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ruby-sidekiq
fi

svc=$root/build/compare-services
out=$(mktemp)
trap 'rm -f "$out"; bash "$root/scripts/services.sh" stop "$svc"' EXIT
exports=$(bash scripts/services.sh start "$svc" 55200 56200)
eval "$exports"
export DATABASE_URL REDIS_URL
# Each phase gets a generous bound; a hung system fails the run instead of hanging it.
limit=$((300 + jobs / 100))

ver() { node -p "require('./bench/compare/node_modules/$1/package.json').version"; }
redis_conf() { redis-cli -u "$REDIS_URL" config get "$1" | tail -1; }
{
  echo "machine     $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
  echo "versions    PostgreSQL $(psql "$DATABASE_URL" -Atc 'SHOW server_version'), Redis $(redis-cli -u "$REDIS_URL" info server | tr -d '\r' | sed -n 's/^redis_version://p'), Node $(node --version), graphile-worker $(ver graphile-worker), bullmq $(ver bullmq), ioredis $(ver ioredis), Ruby $(ruby -e 'print RUBY_VERSION'), Sidekiq $(ruby -rsidekiq/version -e 'print Sidekiq::VERSION'), redis-rb $(ruby -rredis/version -e 'print Redis::VERSION')"
  echo "postgresql  synchronous_commit=$(psql "$DATABASE_URL" -Atc 'SHOW synchronous_commit'), fsync=$(psql "$DATABASE_URL" -Atc 'SHOW fsync')"
  echo "redis       appendonly=$(redis_conf appendonly), appendfsync=$(redis_conf appendfsync), save='$(redis_conf save)' (BullMQ's and Sidekiq's jobs live only here)"
} | tee "$out"

echo; echo "== jobhost (jobctl bench: 1 host x 64 workers, migrator batch 1000)"
# --floor: then the same number of jobs through the host's own claim, lease
# and completion statements back to back (no Redis, no handler): the row
# "pg-floor" is what jobhost's schema and durability allow on this server.
timeout "$limit" build/bin/jobctl bench --jobs "$jobs" --floor | sed 's/^/jobhost    /' | tee -a "$out"

# graphile-worker twice, each on a fresh scratch database: as shipped (only the
# concurrency raised, with the pool size its docs ask for then), and with the
# batching of its performance guide (local queue of 500 jobs, completions
# batched), which is what jobhost does too (migrator batch, completer batches).
graphile() {
  local label=$1 db=graphile_bench_$$
  shift
  echo; echo "== graphile-worker, $label"
  psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
  DATABASE_URL=${DATABASE_URL%/*}/$db timeout "$limit" node bench/compare/graphile.mjs --jobs="$jobs" "$@" |
    sed "s/^/$label /" | tee -a "$out"
  psql "$DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"
}
graphile "graphile  " --concurrency=64
graphile "graphile-b" --concurrency=64 --local-queue=500 --batch-delay=0

bullmq() {
  local label=$1 prefix=bullmq_bench_$$
  echo; echo "== BullMQ, Redis appendonly=$(redis_conf appendonly) appendfsync=$(redis_conf appendfsync)"
  BULLMQ_PREFIX=$prefix timeout "$limit" node bench/compare/bullmq.mjs --jobs="$jobs" --concurrency=64 |
    sed "s/^/$label /" | tee -a "$out"
  local left
  left=$(redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | wc -l)
  [ "$left" -eq 0 ] || echo "run.sh: $left BullMQ keys were left under $prefix:" >&2
}
# Every write to Redis fsynced before it is acknowledged, as PostgreSQL's
# commits are for jobhost and graphile-worker (aof_on), and back (aof_off).
fsync_at_start=$(redis_conf appendfsync)
aof_on() {
  redis-cli -u "$REDIS_URL" config set appendfsync always >/dev/null
  redis-cli -u "$REDIS_URL" config set appendonly yes >/dev/null
  for _ in $(seq 1 100); do  # turning AOF on rewrites the data set in the background first
    redis-cli -u "$REDIS_URL" info persistence | grep -q '^aof_rewrite_in_progress:0' && break
    sleep 0.1
  done
}
aof_off() {
  redis-cli -u "$REDIS_URL" config set appendonly no >/dev/null
  redis-cli -u "$REDIS_URL" config set appendfsync "$fsync_at_start" >/dev/null
}
bullmq "bullmq    "
aof_on  # BullMQ at the durability of the PostgreSQL-based systems
bullmq "bullmq-aof"
aof_off

# Sidekiq in Redis database 1 (BullMQ's keys are in 0), which sidekiq.rb
# refuses when it is not empty and empties at the end; the check is that it did.
sidekiq() {
  local label=$1 db=1
  shift
  echo; echo "== Sidekiq $*, Redis appendonly=$(redis_conf appendonly) appendfsync=$(redis_conf appendfsync)"
  SIDEKIQ_DB=$db timeout "$limit" ruby bench/compare/sidekiq.rb --jobs="$jobs" --concurrency=64 "$@" |
    sed "s/^/$label /" | tee -a "$out"
  local left
  left=$(redis-cli -u "$REDIS_URL" -n "$db" dbsize)
  [ "$left" -eq 0 ] || echo "run.sh: $left Sidekiq keys were left in Redis database $db" >&2
}
sidekiq "sidekiq   " --processes=1
sidekiq "sidekiq-2p" --processes=2
aof_on
sidekiq "sidekiq-aof" --processes=1
aof_off

echo
echo "== summary: $jobs jobs; enqueue and drain in jobs/s; creation -> handler start at 1000 jobs/s in ms; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
printf '%-11s %9s %9s %8s %8s %8s %8s\n' system enqueue drain p50 p90 p99 max
awk '$1 == "jobhost" && $2 == "floor" {
       for (i = 1; i < NF; i++) { if ($i == "at") rate = $(i + 1); if ($i == "is") frac = $(i + 1) }
       printf "%-11s %9s %9s   (jobhost drain = %s of it)\n", "pg-floor", "", rate, frac }' "$out"
for s in jobhost graphile graphile-b bullmq bullmq-aof sidekiq sidekiq-2p sidekiq-aof; do
  awk -v s="$s" '
    function after(word,   i) { for (i = 1; i < NF; i++) if ($i == word) return $(i + 1) }
    $1 == s && $2 == "enqueue" { enq = after("=") }
    $1 == s && $2 == "drain"   { drn = after("=") }
    $1 == s && $2 == "latency" { p50 = after("p50"); p90 = after("p90"); p99 = after("p99"); mx = after("max") }
    END { printf "%-11s %9s %9s %8s %8s %8s %8s\n", s, enq, drn, p50, p90, p99, mx }' "$out"
done
cat <<'EOF'
pg-floor   = jobhost's own claim, lease and completion statements run back to back in batches of 1000, no Redis, no handler (jobctl bench --floor)
graphile   = graphile-worker's defaults but concurrentJobs 64, with maxPoolSize 66 (its docs: the larger of 10 and concurrency + 2)
graphile-b = the same plus its performance guide's batching: localQueue 500, completeJobBatchDelay 0
bullmq     = Redis without persistence (appendonly no, save ''): a Redis restart loses every job
bullmq-aof = Redis with appendonly yes, appendfsync always: each write on disk before it is acknowledged
sidekiq    = Sidekiq (Debian's ruby-sidekiq) on Redis as for bullmq: its Launcher in one process of 64 threads, under Ruby's GIL (one thread runs Ruby at a time); a finished job leaves only a counter in Redis
sidekiq-2p = the same 64 threads as 2 forked processes of 32 (Sidekiq scales by processes)
sidekiq-aof = sidekiq (1 process x 64 threads) on Redis as for bullmq-aof
EOF
