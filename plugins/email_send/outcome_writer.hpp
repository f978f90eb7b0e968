// outcome_writer.hpp: group commit of the messages' outcomes. Workers hand
// in what a relay did with their message and wait; every outcome handed in
// meanwhile is written with one statement (the status updates and their
// email_events rows), so N workers finishing together cost one round trip,
// not N. A worker returns only once its outcome is committed:
// a job is never acknowledged before its message's row says what happened.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <jobhost_plugins/pg_array.hpp>
#include <jobhost_plugins/pg_pool.hpp>

#include "group_commit.hpp"

namespace email_send {

struct OutcomeRow {
  std::string tenant;
  long long row = 0;              // app.email_messages.id
  std::string status;             // sending (unknown), sent, failed
  std::string provider, error;    // '' for none
  std::string event;              // the email_events row's event, '' for none
  std::optional<std::string> campaign;
  std::string recipient;
  std::string detail = "{}";      // the event's detail, JSON
  // A refusal at RCPT TO with 5xx (DESIGN §11): {kind, status, reply_code,
  // diagnostic, ...} as JSON, '' for none. It becomes an app.email_bounces
  // row (source_file NULL); a hard one also suppresses the address for the
  // tenant and adds a 'bounced' event with this detail.
  std::string bounce = "";
};

// Every row's status and its event, tenant-scoped row by row; for a refusal
// at RCPT its app.email_bounces row, and for a hard one the suppression and
// the 'bounced' event. The ANY() is
// there for the planner: joined on (tenant_id, id) alone it scanned a
// tenant's whole index range per row while the table grew faster than its
// statistics (13 ms per batch of 10 in bench/campaign.sh, PostgreSQL's
// busiest statement); by primary key it is one index probe per row.
constexpr const char* kWriteOutcomes = R"sql(
WITH o AS (
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::jsonb[], $10::text[])
    AS o(tenant_id, id, status, provider, error, event, campaign_id, recipient, detail, bounce)),
u AS (
  UPDATE app.email_messages m
     SET status = o.status, provider = nullif(o.provider, ''), error = nullif(o.error, ''),
         sent_at = CASE WHEN o.status = 'sent' THEN now() END
    FROM o WHERE m.id = ANY($2::bigint[]) AND m.id = o.id AND m.tenant_id = o.tenant_id
  RETURNING m.id),
bounced AS (
  SELECT o.*, o.bounce::jsonb AS b FROM o JOIN u ON u.id = o.id WHERE o.bounce <> ''),
recorded AS (
  INSERT INTO app.email_bounces (tenant_id, recipient, status, reply_code, diagnostic, kind, message_id, job_id,
                                 email_message_id)
  SELECT b.tenant_id, lower(btrim(b.recipient)), nullif(b.b->>'status', ''), (b.b->>'reply_code')::int,
         b.b->>'diagnostic', b.b->>'kind', m.message_id, m.job_id, b.id
    FROM bounced b JOIN app.email_messages m ON m.id = b.id AND m.tenant_id = b.tenant_id),
suppressed AS (
  INSERT INTO app.suppressions (tenant_id, email, reason)
  SELECT tenant_id, lower(btrim(recipient)), 'bounced' FROM bounced WHERE b->>'kind' = 'hard'
  ON CONFLICT (tenant_id, email) DO NOTHING),
events AS (
  SELECT o.tenant_id, o.id, o.campaign_id, o.recipient, o.event, o.detail FROM o WHERE o.event <> ''
  UNION ALL
  SELECT tenant_id, id, campaign_id, recipient, 'bounced', b FROM bounced WHERE b->>'kind' = 'hard')
INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail)
SELECT e.tenant_id, e.id, nullif(e.campaign_id, ''), e.recipient, e.event, e.detail FROM events e JOIN u ON u.id = e.id)sql";

class OutcomeWriter {
 public:
  // max_batch: outcomes per statement at most.
  explicit OutcomeWriter(jobhost_plugins::PgPool& pool, size_t max_batch = 512)
      : pool_(pool), batches_([this](const std::vector<OutcomeRow>& rows) { return flush(rows); }, max_batch) {}

  // Blocks until the row is committed; throws std::runtime_error (saying why)
  // when it could not be written in about 3.5 s of retries.
  void write(OutcomeRow row) { batches_.submit(std::move(row)); }

 private:
  // The batch in one statement, tried four times over about 3.5 s.
  std::vector<bool> flush(const std::vector<OutcomeRow>& rows) {
    using jobhost_plugins::pg_array;
    std::vector<std::string> cols[10];
    for (const OutcomeRow& r : rows) {
      cols[0].push_back(r.tenant);
      cols[1].push_back(std::to_string(r.row));
      cols[2].push_back(r.status);
      cols[3].push_back(r.provider);
      cols[4].push_back(r.error);
      cols[5].push_back(r.event);
      cols[6].push_back(r.campaign.value_or(""));  // campaign ids are never '' (CHECK id <> '')
      cols[7].push_back(r.recipient);
      cols[8].push_back(r.detail);
      cols[9].push_back(r.bounce);
    }
    for (int attempt = 1;; ++attempt) {
      try {
        auto conn = pool_.acquire();
        pqxx::nontransaction tx(*conn);
        tx.exec_params(kWriteOutcomes, pg_array(cols[0]), pg_array(cols[1]), pg_array(cols[2]), pg_array(cols[3]),
                       pg_array(cols[4]), pg_array(cols[5]), pg_array(cols[6]), pg_array(cols[7]), pg_array(cols[8]),
                       pg_array(cols[9]));
        return std::vector<bool>(rows.size(), true);
      } catch (const std::exception&) {
        if (attempt == 4) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt * attempt));
    }
  }

  jobhost_plugins::PgPool& pool_;
  GroupCommit<OutcomeRow, bool> batches_;
};

}  // namespace email_send
