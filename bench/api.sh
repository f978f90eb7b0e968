#!/usr/bin/env bash
# Measures the admin API of one host on loopback (bench/api_attack.cpp):
#
#   bench/api.sh attack [api_attack options]   probes and an honest client, unloaded and under attack
#   bench/api.sh load   [api_attack options]   requests/s of POST /api/v1/jobs and GET /api/v1/jobs/{id}
#
# Needs DATABASE_URL and REDIS_URL (e.g. from scripts/services.sh start); makes a
# scratch database and key prefix, starts one host with every role but the
# scheduler and the noop plugin, runs the measurement, and removes everything
# it made. JOBHOST_BIN picks another jobhost build (e.g. an older one, to compare);
# API_YAML is added under api: (e.g. "  rate_limit: { per_client: { requests_per_s: 0 } }").
# JOBHOST_CPUS runs the host on those CPUs only (taskset -c), e.g. JOBHOST_CPUS=0
# with `attack --client-cpus 0 --attack-cpus 1`: the attacker then cannot take
# the host's CPU, as one on another machine could not.
set -euo pipefail
mode=${1:?usage: bench/api.sh attack|load [api_attack options]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
jobhost=${JOBHOST_BIN:-$build/bin/jobhost}
attack_bin=${ATTACK_BIN:-$build/bin/api_attack}
: "${DATABASE_URL:?set DATABASE_URL (scripts/services.sh start prints it)}"
: "${REDIS_URL:?set REDIS_URL}"
port=${API_PORT:-18080}
health=$((port + 1))
token=bench-token-$$
db=jobhost_apibench_$$
work=$(mktemp -d)
host_pid=

cleanup() {
  if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
    kill "$host_pid"
    wait "$host_pid" 2>/dev/null || true
  fi
  psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
url="${DATABASE_URL%/*}/$db"
DATABASE_URL=$url "$build/bin/jobctl" db migrate >/dev/null
# An older jobhost knows no api.health_listen: give it only what it reads.
health_yaml="  health_listen: \"127.0.0.1:$health\""
[ -z "${JOBHOST_BIN:-}" ] || health_yaml=""
cat > "$work/jobhost.yaml" <<YAML
postgres: { url: "$url" }
redis: { url: "$REDIS_URL", key_prefix: apibench$$ }
host: { roles: [migrator, worker, reaper, api] }
log: { level: warn }
api:
  listen: "127.0.0.1:$port"
$health_yaml
  token: "$token"
${API_YAML:-}
plugins:
  - { name: noop, library: "$build/plugins/libnoop.so", concurrency: { min: 4, max: 4 } }
YAML
pin=()
[ -z "${JOBHOST_CPUS:-}" ] || pin=(taskset -c "$JOBHOST_CPUS")
"${pin[@]}" "$jobhost" --config "$work/jobhost.yaml" > "$work/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
  echo "bench/api.sh: jobhost does not answer on 127.0.0.1:$port; its log:" >&2
  cat "$work/host.log" >&2
  exit 1
fi
health_args=()
[ -n "$health_yaml" ] && [ "$mode" = attack ] && health_args=(--health-port "$health")
"$attack_bin" "$mode" --port "$port" --token "$token" "${health_args[@]}" "$@"
