#!/usr/bin/env bash
# Measures import.contacts on a generated CSV: rows/s and the host's peak RSS.
#   bash bench/import.sh [ROWS [BAD_EVERY]]   from the repository root, after a build
# ROWS defaults to 1000000. BAD_EVERY=N makes every Nth data row's name hold a
# byte that is not UTF-8 (0xE9, "Caf\xE9" as Windows-1252 writes it): those rows
# must be rejected and every other row imported.
# Uses DATABASE_URL / REDIS_URL when set, else starts its own PostgreSQL and
# Redis (ports 55400 / 56400, data under build/import-bench) and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rows=${1:-1000000}
bad_every=${2:-0}
[[ $rows =~ ^[1-9][0-9]*$ ]] || { echo "import.sh: ROWS must be a positive integer" >&2; exit 2; }
[[ $bad_every =~ ^[0-9]+$ ]] || { echo "import.sh: BAD_EVERY must be a non-negative integer" >&2; exit 2; }
work=$root/build/import-bench
mkdir -p "$work/imports"
started=""
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  exports=$(bash scripts/services.sh start "$work/services" 55400 56400)
  eval "$exports"
  started=1
fi
export DATABASE_URL REDIS_URL
host=""
finish() {
  [ -z "$host" ] || { kill -TERM "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; }
  [ -z "$started" ] || bash "$root/scripts/services.sh" stop "$work/services"
}
trap finish EXIT
db=import_bench_$$
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
url=${DATABASE_URL%/*}/$db
DATABASE_URL=$url build/bin/jobctl db migrate >/dev/null
psql "$url" -qc "INSERT INTO app.tenants (id, name) VALUES ('bench', 'Bench');
                 INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('all', 'bench', 'All')"
LC_ALL=C awk -v n="$rows" -v bad="$bad_every" 'BEGIN { print "email,name,company"; for (i = 1; i <= n; i++)
  if (bad > 0 && i % bad == 0) printf "user%d@example.com,Caf\351 %d,\"Company %d, Ltd\"\n", i, i, i % 1000
  else printf "user%d@example.com,User %d,\"Company %d, Ltd\"\n", i, i, i % 1000 }' \
  > "$work/imports/contacts.csv"
cat > "$work/jobhost.yaml" <<YAML
postgres: { url: "$url" }
redis: { url: "$REDIS_URL", key_prefix: "import_bench_$$" }
host: { roles: [migrator, worker, reaper] }
plugins:
  - name: import_contacts
    library: $root/build/plugins/libimport_contacts.so
    job_types: [import.contacts]
    concurrency: { min: 1, max: 1 }
    timeout_ms: 3600000
    settings: { database_url: "$url", import_root: "$work/imports", batch_size: 1000 }
YAML
build/bin/jobhost --config "$work/jobhost.yaml" > "$work/jobhost.log" 2>&1 &
host=$!
for _ in $(seq 1 100); do grep -q ' ready' "$work/jobhost.log" && break; sleep 0.1; done
idle=$(awk '/VmRSS/ {print $2}' /proc/$host/status)
id=$(DATABASE_URL=$url build/bin/jobctl enqueue import.contacts "{\"tenant_id\": \"bench\", \"list_id\": \"all\",
  \"file_url\": \"file://$work/imports/contacts.csv\", \"has_header\": true,
  \"mapping\": {\"col_0\": \"email\", \"col_1\": \"name\", \"col_2\": \"company\"}}")
# Until the job is done for good (a retried attempt is waited for).
until [[ "$(psql "$url" -Atc "SELECT status FROM jobhost.jobs WHERE id = '$id'")" =~ ^(completed|failed|cancelled)$ ]]; do
  sleep 0.5
done
peak=$(awk '/VmHWM/ {print $2}' /proc/$host/status)
psql "$url" -Atc "SELECT 'import: ' || status || ', ' || rows_accepted || ' of ' || rows_total || ' rows' ||
                  coalesce(' in ' || round(extract(epoch FROM finished_at - started_at)::numeric, 1) || ' s = ' ||
                           round(rows_total / extract(epoch FROM finished_at - started_at)) || ' rows/s', ' (not finished)') ||
                  '; list contact_count ' ||
                  (SELECT contact_count FROM app.contact_lists) || ', rejections recorded ' ||
                  (SELECT count(*) FROM app.import_rejections)
                  FROM app.imports"
psql "$url" -Atc "SELECT 'job: ' || status || ', attempts ' || attempt_count || coalesce(', ' || last_error_message, '')
                  FROM jobhost.jobs WHERE id = '$id'"
echo "host RSS: $((idle / 1024)) MB idle before, peak $((peak / 1024)) MB (VmHWM), file $(du -m "$work/imports/contacts.csv" | cut -f1) MB"
kill -TERM "$host"; wait "$host" || true; host=""
psql "$DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"
rm -f "$work/imports/contacts.csv"
