#!/usr/bin/env bash
# The email platform end to end, on this machine only: a tenant, a contact list
# imported from a CSV, a template and a campaign; the campaign fans out into
# email.send jobs, the emails arrive at a local SMTP server (which refuses one
# address as an unknown user: a hard bounce, suppressed), and the campaign ends
# completed with its counts; a second campaign skips the bounced address.
#
#   bash scripts/demo.sh            from the repository root
#
# It builds, then starts its own PostgreSQL and Redis (ports 55300 / 56300, data
# under build/demo/), the smtp-sink SMTP server (127.0.0.1:55325, messages as
# .eml files under build/demo/mail/), and jobhost with config/jobhost.yaml, and
# stops all of them when it ends. Each step prints the job's `jobctl status`;
# jobhost's log is build/demo/jobhost.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# ctest runs the demo as a test after building: it sets JOBHOST_DEMO_BUILT=1.
[ -n "${JOBHOST_DEMO_BUILT:-}" ] || bash scripts/build.sh

demo=$root/build/demo
# Services from an earlier run that was killed: stop them before starting afresh.
[ ! -d "$demo/services" ] || bash scripts/services.sh stop "$demo/services" >/dev/null 2>&1 || true
rm -rf "$demo"
mkdir -p "$demo/imports/tenant_demo" "$demo/exports" "$demo/mail"

pids=()
finish() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bash "$root/scripts/services.sh" stop "$demo/services" || true
}
trap finish EXIT

exports=$(bash scripts/services.sh start "$demo/services" 55300 56300)
eval "$exports"
export DATABASE_URL REDIS_URL
export JOBHOST_SMTP_URL=smtp://127.0.0.1:55325
export JOBHOST_SMTP_FALLBACK_URL=smtp://127.0.0.1:55326   # nothing listens: failover is not needed here
export JOBHOST_IMPORT_ROOT=$demo/imports
export JOBHOST_EXPORT_ROOT=$demo/exports
export JOBHOST_INBOUND_ROOT=$demo/inbound
export JOBHOST_API_LISTEN=127.0.0.1:0   # the dashboard, on a free port (see the log)
export JOBHOST_API_HEALTH_LISTEN=127.0.0.1:0   # the probes too
build/bin/jobctl db migrate >/dev/null

# reader7 does not exist at this "relay": RCPT TO gets 550 5.1.1 User unknown.
build/bin/smtp-sink --listen 127.0.0.1:55325 --maildir "$demo/mail" --unknown-user reader7@demo.example \
  >"$demo/smtp-sink.log" 2>&1 &
pids+=($!)
build/bin/jobhost --config config/jobhost.yaml >"$demo/jobhost.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q ' ready' "$demo/jobhost.log" && break; sleep 0.1; done
grep -q ' ready' "$demo/jobhost.log" || { echo "demo: jobhost did not start:"; cat "$demo/jobhost.log"; exit 1; }
grep -q 'listening on' "$demo/smtp-sink.log" || { echo "demo: smtp-sink did not start:"; cat "$demo/smtp-sink.log"; exit 1; }

sql() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAt "$@"; }
step() { printf '\n== %s\n' "$*"; }
# Waits for a job to leave the live states, then shows it.
wait_job() {
  local id=$1 status
  for _ in $(seq 1 600); do
    status=$(sql -c "SELECT status FROM jobhost.jobs WHERE id = '$id'")
    case $status in completed|failed|cancelled) break ;; esac
    sleep 0.1
  done
  build/bin/jobctl status "$id"
  [ "$status" = completed ] || { echo "demo: job $id ended $status; see $demo/jobhost.log"; exit 1; }
}

step "1. a tenant, a contact list, a template"
sql <<'SQL'
INSERT INTO app.tenants (id, name) VALUES ('tenant_demo', 'Demo Ltd');
INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('list_newsletter', 'tenant_demo', 'Newsletter');
INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body)
VALUES ('tpl_welcome', 'tenant_demo', 'Welcome', 'news@demo.example',
        'Welcome, {{name}}!',
        '<p>Hello {{name}},</p><p>thanks for joining {{company}}.</p>',
        'Hello {{name}}, thanks for joining {{company}}.');
SQL
sql -c "SELECT 'tenant ' || id || ', list ' || (SELECT id FROM app.contact_lists) || ', template ' || (SELECT id FROM app.email_templates) FROM app.tenants"

step "2. import.contacts from a CSV (two rows are bad on purpose)"
csv=$demo/imports/tenant_demo/contacts.csv
{
  echo 'email,name,company'
  for i in $(seq 1 25); do echo "reader$i@demo.example,Reader $i,\"Demo, Ltd\""; done
  echo 'not-an-email,Nobody,Demo'
  echo 'reader26@demo.example,"Reader ""26""",Demo'
  echo ',No Address,Demo'
} >"$csv"
id=$(build/bin/jobctl enqueue import.contacts "{\"tenant_id\": \"tenant_demo\", \"list_id\": \"list_newsletter\",
  \"file_url\": \"file://$csv\", \"has_header\": true,
  \"mapping\": {\"col_0\": \"email\", \"col_1\": \"name\", \"col_2\": \"company\"}}")
wait_job "$id"
sql -F ' ' -c "SELECT 'imported: ' || rows_accepted || ' accepted, ' || rows_rejected || ' rejected' FROM app.imports"
sql -F ': ' -c "SELECT 'rejected line ' || line_number, reason FROM app.import_rejections ORDER BY line_number"
sql -c "SELECT 'list contact_count = ' || contact_count FROM app.contact_lists"

step "3. a campaign to the list, run by campaign.process"
sql -c "INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id)
        VALUES ('camp_launch', 'tenant_demo', 'Launch', 'list_newsletter', 'tpl_welcome')"
id=$(build/bin/jobctl enqueue campaign.process '{"tenant_id": "tenant_demo", "campaign_id": "camp_launch"}')
wait_job "$id"
sql -c "SELECT 'campaign ' || id || ': ' || status || ', ' || enqueued_count || ' email.send jobs enqueued' FROM app.campaigns"

step "4. the email.send jobs deliver to the SMTP server (one address bounces)"
want=$(( $(sql -c "SELECT count(*) FROM app.contact_list_members") - 1 ))
for _ in $(seq 1 300); do
  [ "$(find "$demo/mail" -name '*.eml' | wc -l)" -ge "$want" ] && break
  sleep 0.1
done
got=$(find "$demo/mail" -name '*.eml' | wc -l)
sql -c "SELECT 'email.send jobs: ' || string_agg(status || ' ' || n, ', ') FROM
        (SELECT status, count(*) n FROM jobhost.jobs WHERE queue_name = 'email.send' GROUP BY status) s"
sql -c "SELECT 'app.email_messages: ' || string_agg(status || ' ' || n, ', ') FROM
        (SELECT status, count(*) n FROM app.email_messages GROUP BY status) s"
echo "messages received by the SMTP server: $got of $want (in $demo/mail)"
first=$(find "$demo/mail" -name '*.eml' | sort | head -1)
[ -n "$first" ] && { echo "-- the headers of one of them:"; sed -n '1,/^\r\{0,1\}$/p' "$first" | grep -E '^(From|To|Subject|Message-ID|Content-Type):'; }
[ "$got" -ge "$want" ] || { echo "demo: not every email arrived; see $demo/jobhost.log"; exit 1; }

step "5. the campaign's batch finishes: campaign.finish marks it completed with its counts"
for _ in $(seq 1 300); do
  [ "$(sql -c "SELECT status FROM app.campaigns WHERE id = 'camp_launch'")" = completed ] && break
  sleep 0.1
done
sql -c "SELECT 'campaign ' || id || ': ' || status || ', sent ' || sent_count || ', suppressed ' || suppressed_count ||
        ', failed ' || failed_count || ', bounced ' || bounced_count FROM app.campaigns WHERE id = 'camp_launch'"
sql -c "SELECT 'batch ' || id || ': ' || state || ', ' || total || ' jobs: ' || completed || ' completed, ' ||
        failed || ' failed' FROM jobhost.batch_status"
sql -c "SELECT 'suppressed: ' || email || ' (' || reason || ')' FROM app.suppressions"
[ "$(sql -c "SELECT status || ' ' || bounced_count FROM app.campaigns WHERE id = 'camp_launch'")" = "completed 1" ] ||
  { echo "demo: the campaign did not complete with one bounce; see $demo/jobhost.log"; exit 1; }

step "6. a second campaign to the same list skips the bounced address"
sql -c "INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id)
        VALUES ('camp_again', 'tenant_demo', 'Again', 'list_newsletter', 'tpl_welcome')"
id=$(build/bin/jobctl enqueue campaign.process '{"tenant_id": "tenant_demo", "campaign_id": "camp_again"}')
wait_job "$id"
for _ in $(seq 1 300); do
  [ "$(sql -c "SELECT status FROM app.campaigns WHERE id = 'camp_again'")" = completed ] && break
  sleep 0.1
done
sql -c "SELECT 'campaign ' || id || ': ' || status || ', sent ' || sent_count || ', suppressed ' || suppressed_count ||
        ', failed ' || failed_count || ', bounced ' || bounced_count FROM app.campaigns WHERE id = 'camp_again'"
[ "$(sql -c "SELECT status || ' ' || suppressed_count || ' ' || failed_count FROM app.campaigns WHERE id = 'camp_again'")" = "completed 1 0" ] ||
  { echo "demo: the second campaign did not skip the bounced address; see $demo/jobhost.log"; exit 1; }

step "7. export.data of the tenant's contacts"
id=$(build/bin/jobctl enqueue export.data '{"tenant_id": "tenant_demo", "kind": "contacts"}')
wait_job "$id"
sql -F ' ' -c "SELECT 'export ' || path || ': ' || rows || ' rows, ' || bytes || ' bytes, sha256 ' || sha256 FROM app.exports"

step "done: jobhost's log is $demo/jobhost.log; jobhost, smtp-sink, PostgreSQL and Redis are stopping"
