#!/usr/bin/env bash
# The platform's main job end to end (DESIGN §7): one campaign of N contacts,
# campaign.process -> N email.send jobs -> SMTP to build/bin/smtp-sink on
# loopback, through a real jobhost; then the no-op drain (`jobctl bench`) on
# the same PostgreSQL and Redis, in the same run.
#   bash bench/campaign.sh N [--relay-delay-ms D] [--workers W] [--sessions S] [--noop-jobs J]
#                            [--plugins DIR] [--legacy]
# from the repository root, after a build.
#   --relay-delay-ms D  the sink sends each reply D ms after its command came (default 0)
#   --workers W         email.send workers (default 64)
#   --sessions S        email_send's max_sessions per relay (default: W)
#   --noop-jobs J       jobs of the no-op drain (default 100000)
#   --plugins DIR       take libemail_send.so and libcampaign_process.so from DIR
#                       (to measure another build, e.g. the one before pooling)
#   --legacy            leave out the settings that build does not know (max_sessions)
# Prints emails/s (campaign.process enqueued -> last email.send completed),
# SMTP connections the sink accepted, PostgreSQL statements per message (from
# pg_stat_statements: email_send's, and all of them), the host's peak RSS, and
# the no-op drain with the ratio.
# Uses DATABASE_URL / REDIS_URL when both are set (statement counts then need
# pg_stat_statements loaded there), else starts its own PostgreSQL and Redis
# (ports 55444 / 56391, data under build/campaign-bench, pg_stat_statements
# loaded, durability at PostgreSQL's default) and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
usage() { echo "usage: bash bench/campaign.sh N [--relay-delay-ms D] [--workers W] [--sessions S] [--noop-jobs J] [--plugins DIR] [--legacy]" >&2; exit 2; }
n=${1:-}
[[ $n =~ ^[1-9][0-9]*$ ]] || usage
shift
delay=0 workers=64 sessions="" noop_jobs=100000 plugins=$root/build/plugins legacy=""
while (($#)); do
  case $1 in
    --relay-delay-ms) delay=${2:-}; shift 2 ;;
    --workers) workers=${2:-}; shift 2 ;;
    --sessions) sessions=${2:-}; shift 2 ;;
    --noop-jobs) noop_jobs=${2:-}; shift 2 ;;
    --plugins) plugins=${2:-}; shift 2 ;;
    --legacy) legacy=1; shift ;;
    *) usage ;;
  esac
done
for v in "$delay" "$workers" "$noop_jobs" "${sessions:-1}"; do [[ $v =~ ^[0-9]+$ ]] || usage; done
sessions=${sessions:-$workers}
[ -f "$plugins/libemail_send.so" ] || { echo "campaign.sh: no $plugins/libemail_send.so; build first" >&2; exit 1; }
plugins=$(cd "$plugins" && pwd)  # the config below names the libraries by absolute path

work=$root/build/campaign-bench
mkdir -p "$work"
started=""
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  exports=$(bash scripts/services.sh start "$work/services" 55444 56391)
  eval "$exports"
  started=1
  if [ "$(psql "$DATABASE_URL" -Atc "SHOW shared_preload_libraries")" != pg_stat_statements ]; then
    psql "$DATABASE_URL" -qc "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
    bash scripts/services.sh stop "$work/services" >/dev/null
    eval "$(bash scripts/services.sh start "$work/services" 55444 56391)"
  fi
fi
export DATABASE_URL REDIS_URL
host="" sink=""
finish() {
  [ -z "$host" ] || { kill -TERM "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; }
  [ -z "$sink" ] || { kill -TERM "$sink" 2>/dev/null || true; wait "$sink" 2>/dev/null || true; }
  [ -z "${db:-}" ] || [ -n "${CAMPAIGN_BENCH_KEEP:-}" ] || psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  [ -z "$started" ] || bash "$root/scripts/services.sh" stop "$work/services"
}
trap finish EXIT

db=campaign_bench_$$
psql "$DATABASE_URL" -qc "CREATE DATABASE $db"
url=${DATABASE_URL%/*}/$db
DATABASE_URL=$url build/bin/jobctl db migrate >/dev/null
psql "$url" -q <<SQL
INSERT INTO app.tenants (id, name) VALUES ('bench', 'Bench');
INSERT INTO app.contact_lists (id, tenant_id, name, contact_count) VALUES ('all', 'bench', 'All', $n);
INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body)
VALUES ('tpl', 'bench', 'News', 'news@bench.example', 'News for {{name}}',
        '<p>Hello {{name}},</p><p>this month at {{company}}: more of everything.</p>',
        'Hello {{name}}, this month at {{company}}: more of everything.');
INSERT INTO app.contacts (tenant_id, email, name, attributes)
SELECT 'bench', 'user' || i || '@example.com', 'User ' || i, jsonb_build_object('company', 'Company ' || i % 1000)
  FROM generate_series(1, $n) i;
INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id) SELECT 'bench', 'all', id FROM app.contacts;
INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id) VALUES ('camp', 'bench', 'Bench', 'all', 'tpl');
SQL
psql "$url" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null || true

build/bin/smtp-sink --listen 127.0.0.1:0 --count-only --delay-ms "$delay" > "$work/sink.log" 2>&1 &
sink=$!
for _ in $(seq 1 50); do grep -q 'listening on' "$work/sink.log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/sink.log")
[ -n "$port" ] || { cat "$work/sink.log" >&2; exit 1; }

pool_keys=""
[ -n "$legacy" ] || pool_keys=", max_sessions: $sessions"
cat > "$work/jobhost.yaml" <<YAML
postgres: { url: "$url" }
redis: { url: "$REDIS_URL", key_prefix: "campaign_bench_$$" }
host: { roles: [migrator, worker, reaper] }
plugins:
  - name: campaign_process
    library: $plugins/libcampaign_process.so
    job_types: [campaign.process]
    concurrency: { min: 1, max: 1 }
    timeout_ms: 3600000
    settings: { database_url: "$url", batch_size: 1000 }
  - name: email_send
    library: $plugins/libemail_send.so
    job_types: [email.send]
    concurrency: { min: $workers, max: $workers }
    timeout_ms: 60000
    settings:
      database_url: "$url"
      db_pool_size: 16
      helo: bench.localdomain
      providers:
        - { name: sink, url: "smtp://127.0.0.1:$port", timeout_ms: 20000$pool_keys }
YAML
build/bin/jobhost --config "$work/jobhost.yaml" > "$work/jobhost.log" 2>&1 &
host=$!
for _ in $(seq 1 100); do grep -q ' ready' "$work/jobhost.log" && break; sleep 0.1; done
grep -q ' ready' "$work/jobhost.log" || { echo "campaign.sh: jobhost did not start:" >&2; tail -5 "$work/jobhost.log" >&2; exit 1; }
psql "$url" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null 2>&1 || true
id=$(DATABASE_URL=$url build/bin/jobctl enqueue campaign.process '{"tenant_id": "bench", "campaign_id": "camp"}')
deadline=$((SECONDS + 3600))
# Done when the campaign's batch has finished (every email.send job ended):
# one row read a second, where counting the jobs would cost the run itself
# a scan of the queue every second.
done_sql="SELECT coalesce((SELECT b.state = 'finished' FROM app.campaigns c JOIN jobhost.batches b ON b.id = c.batch_id
                            WHERE c.tenant_id = 'bench' AND c.id = 'camp'),
                          (SELECT count(*) >= $n FROM jobhost.jobs WHERE queue_name = 'email.send'
                              AND status IN ('completed', 'failed', 'cancelled')))"
until [ "$(psql "$url" -Atc "$done_sql")" = t ]; do
  ((SECONDS < deadline)) || { echo "campaign.sh: not done after an hour; see $work/jobhost.log" >&2; exit 1; }
  kill -0 "$host" 2>/dev/null || { echo "campaign.sh: jobhost exited; see $work/jobhost.log" >&2; exit 1; }
  sleep 1  # the figures come from the jobs' timestamps, not from this loop
done
peak=$(awk '/VmHWM/ {print $2}' /proc/$host/status)
stmts=$(psql "$url" -Atc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                           WHERE d.datname = current_database()" 2>/dev/null || echo "")
email_stmts=$(psql "$url" -Atc "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                                 WHERE d.datname = current_database()
                                   AND (query ~ 'app\.(email_messages|email_templates|sending_domains|suppressions)'
                                        AND query !~ 'jobhost\.')" 2>/dev/null || echo "")
top=$(psql "$url" -Atc "SELECT round(calls::numeric / $n, 3) || ' per message, ' || round(mean_exec_time::numeric, 2) || ' ms mean: ' ||
                        left(regexp_replace(query, '\s+', ' ', 'g'), 90)
                         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                        WHERE d.datname = current_database() ORDER BY total_exec_time DESC LIMIT 6" 2>/dev/null || true)
kill -TERM "$host"; wait "$host" || true; host=""
kill -TERM "$sink"; wait "$sink" || true; sink=""

echo "campaign: $n recipients, relay delay ${delay} ms per reply, $workers email.send workers, max_sessions $sessions$([ -n "$legacy" ] && echo " (legacy settings)")"
emails=$(psql "$url" -Atc "SELECT 'emails: ' || count(*) FILTER (WHERE j.status = 'completed') || ' completed, ' ||
                         count(*) FILTER (WHERE j.status <> 'completed') || ' not; ' ||
                         round(extract(epoch FROM max(j.completed_at) - c.created_at)::numeric, 2) || ' s = ' ||
                         round(count(*) / extract(epoch FROM max(j.completed_at) - c.created_at)) ||
                         ' emails/s (campaign.process enqueued -> last email.send completed)'
                    FROM jobhost.jobs j, jobhost.jobs c
                   WHERE j.queue_name = 'email.send' AND c.id = '$id' GROUP BY c.created_at")
echo "$emails"
psql "$url" -Atc "SELECT 'messages: ' || string_agg(status || ' ' || n, ', ') FROM
                    (SELECT status, count(*) n FROM app.email_messages GROUP BY status ORDER BY status) s"
echo "smtp: $(sed -n 's/^smtp-sink: \(.*\); stopped$/\1/p' "$work/sink.log")"
if [ -n "$stmts" ]; then
  awk -v a="$email_stmts" -v t="$stmts" -v n="$n" \
    'BEGIN { printf "database: %.2f statements per message by email_send; %.2f by everything (host and campaign.process included)\n", a / n, t / n }'
  echo "  most time: (statements per message, mean execution time, text)"
  sed 's/^/    /' <<<"$top"
else
  echo "database: statement counts unavailable (pg_stat_statements is not loaded in that PostgreSQL)"
fi
echo "host: peak RSS $((peak / 1024)) MB (VmHWM)"
[ -n "${CAMPAIGN_BENCH_KEEP:-}" ] && echo "kept database $db" || { psql "$DATABASE_URL" -qc "DROP DATABASE $db WITH (FORCE)"; db=""; }

echo "no-op drain (jobctl bench --jobs $noop_jobs, same PostgreSQL and Redis):"
build/bin/jobctl bench --jobs "$noop_jobs" --latency-seconds 0 > "$work/noop.log" 2>&1 || { cat "$work/noop.log" >&2; exit 1; }
grep -E '^drain' "$work/noop.log"
rate=$(sed -n 's/.* = \([0-9]*\) emails\/s.*/\1/p' <<<"$emails")
drain=$(sed -n 's/^drain .* = \([0-9]*\) jobs\/s.*/\1/p' "$work/noop.log")
[ -z "$rate" ] || [ -z "$drain" ] || awk -v r="$rate" -v d="$drain" \
  'BEGIN { printf "ratio: %.2f x the no-op drain (target >= 0.3 without relay delay; >= 1000 emails/s with 20 ms)\n", r / d }'
