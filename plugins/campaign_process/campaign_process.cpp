// campaign_process: the job types "campaign.process", which fans a campaign
// out into one email.send job per member of its contact list, and
// "campaign.finish", which marks it completed once they have all ended.
//
// Payload: {"campaign_id": "...", "tenant_id": "..."} (campaign.finish also
// gets "batch": the counts of its batch, sql/014_batches.sql).
// Settings: database_url (required), db_pool_size (default 2), batch_size
// (contacts per page, default 1000), email_priority (priority of the email.send
// jobs, default 100: the normal band); any other key is refused.
//
// Exactly-once fan-out: each page's email.send jobs are inserted in the same
// transaction that advances app.campaigns.cursor_contact_id past them, with the
// campaign row locked (FOR UPDATE) and the cursor re-read under that lock. A run
// killed at any point either committed a page (jobs + cursor) or did not, and
// two attempts running at once take turns page by page, so no contact is ever
// enqueued twice or skipped. 'sent' means every email.send job has been
// enqueued, not that every message has been delivered: email.send records that
// per message. The jobs go in a batch (opened with the first page, closed with
// the last, in those pages' transactions); when its last job has ended, the
// batch's callback campaign.finish stores the counts and marks the campaign
// 'completed' (a cancelled campaign keeps its status and gets its counts).
#include <algorithm>
#include <cstdint>
#include <string>

// A fan-out is cheap to resume, and a database outage should not dead-letter a
// campaign quickly: many attempts, backing off to five minutes.
#define JOBHOST_PLUGIN_DEFAULT_RETRY R"({"max_attempts": 10, "base_ms": 1000, "max_ms": 300000})"
#include <jobhost/plugin.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;

// The campaign, locked for the rest of the transaction. NO KEY UPDATE: the
// email.send jobs already running insert app.email_messages rows whose
// foreign key takes a KEY SHARE lock on it, which FOR UPDATE would make wait
// for the page's commit.
constexpr const char* kLockCampaign =
    "SELECT status, list_id, template_id, cursor_contact_id, enqueued_count, coalesce(batch_id::text, '') "
    "FROM app.campaigns WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE";

// 'failed' is resumable too: replaying the dead-lettered job continues at the
// cursor, in the batch the first attempt opened.
constexpr const char* kStartSending = R"SQL(
UPDATE app.campaigns SET status = 'sending', started_at = coalesce(started_at, now()), finished_at = NULL,
       batch_id = coalesce(batch_id, jobhost.batch_open(
           callback_type => 'campaign.finish',
           callback_payload => jsonb_build_object('campaign_id', id, 'tenant_id', tenant_id),
           description => 'campaign ' || id || ' (' || name || ')')),
       updated_at = now()
 WHERE tenant_id = $1 AND id = $2
RETURNING batch_id::text)SQL";

// One page: the next members after the cursor, in contact_id order (the list's
// primary key order, so an index range scan), turned into email.send payloads
// and enqueued server-side in one set-based insert. Returns the page size, the
// last contact id and how many jobs were inserted. `c.id > $3` says again
// what the join implies: PostgreSQL does not carry the range across it, and
// the merge join then read the contacts index from its start on every page
// (6,000 entries for the page after contact 5,000: quadratic in the list).
// $1 tenant, $2 list, $3 cursor, $4 page size, $5 template, $6 campaign, $7 priority, $8 batch.
constexpr const char* kFanOutPage = R"SQL(
WITH page AS (
    SELECT m.contact_id, c.email, c.name, c.attributes
      FROM app.contact_list_members m
      JOIN app.contacts c ON c.tenant_id = m.tenant_id AND c.id = m.contact_id
     WHERE m.tenant_id = $1 AND m.list_id = $2 AND m.contact_id > $3 AND c.id > $3
     ORDER BY m.contact_id
     LIMIT $4
), batch AS (
    SELECT count(*) AS n, max(contact_id) AS last_id,
           array_agg(jsonb_build_object(
               'recipient', email,
               'template_id', $5::text,
               'variables', attributes || jsonb_build_object('name', coalesce(name, ''), 'email', email),
               'tenant_id', $1::text,
               'campaign_id', $6::text) ORDER BY contact_id) AS payloads
      FROM page
)
SELECT b.n, coalesce(b.last_id, 0),
       CASE WHEN b.n > 0
            THEN (SELECT count(*) FROM jobhost.enqueue_many('email.send', b.payloads, $7::integer,
                                                            batch_id => $8::uuid))
            ELSE 0 END
  FROM batch b
)SQL";

constexpr const char* kAdvanceCursor =
    "UPDATE app.campaigns SET cursor_contact_id = $3, enqueued_count = enqueued_count + $4, "
    "updated_at = now() WHERE tenant_id = $1 AND id = $2";

// Every job enqueued: no more will join the batch.
constexpr const char* kFinish =
    "UPDATE app.campaigns SET status = 'sent', finished_at = now(), updated_at = now() "
    "WHERE tenant_id = $1 AND id = $2 "
    "RETURNING CASE WHEN batch_id IS NOT NULL THEN jobhost.batch_close(batch_id) END";

// A campaign the application cancelled stops enqueueing: its batch closes,
// so what was enqueued is still counted when it has run.
constexpr const char* kCloseBatch =
    "SELECT jobhost.batch_close(batch_id) FROM app.campaigns "
    "WHERE tenant_id = $1 AND id = $2 AND batch_id IS NOT NULL";

// campaign.finish: what became of the campaign's messages. Suppressed and sent
// from email.send's rows; failed from the batch (jobs that failed or were
// cancelled, with or without a row); bounced from the bounce events known by
// now (synchronous RCPT refusals and bounces processed so far).
// $1 tenant, $2 campaign, $3 batch failed + cancelled.
constexpr const char* kComplete = R"SQL(
UPDATE app.campaigns c SET
       status = CASE WHEN c.status IN ('sent', 'completed') THEN 'completed' ELSE c.status END,
       sent_count = m.sent, suppressed_count = m.suppressed, failed_count = $3,
       bounced_count = (SELECT count(DISTINCT recipient) FROM app.email_events e
                         WHERE e.tenant_id = $1 AND e.campaign_id = $2 AND e.event = 'bounced'),
       completed_at = now(), updated_at = now()
  FROM (SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'suppressed') AS suppressed
          FROM app.email_messages WHERE tenant_id = $1 AND campaign_id = $2) m
 WHERE c.tenant_id = $1 AND c.id = $2
RETURNING c.status, c.sent_count, c.suppressed_count, c.failed_count, c.bounced_count)SQL";

constexpr const char* kMarkFailed =
    "UPDATE app.campaigns SET status = 'failed', updated_at = now() "
    "WHERE tenant_id = $1 AND id = $2 AND status = 'sending'";

constexpr const char* kListSize =
    "SELECT contact_count FROM app.contact_lists WHERE tenant_id = $1 AND id = $2";

const jobhost_plugins::SettingsReader::Keys kKeys = {"database_url", "db_pool_size", "batch_size",
                                                     "email_priority"};

class CampaignProcess : public jobhost::sdk::Plugin {
 public:
  explicit CampaignProcess(const Settings& settings)
      : CampaignProcess(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit CampaignProcess(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 2),
        batch_size_(static_cast<int>(s.integer("batch_size", 1000, 1, 100000))),
        email_priority_(static_cast<int>(s.integer("email_priority", 100, INT32_MIN, INT32_MAX))) {}

  std::string validate(std::string_view type, const nlohmann::json& p) override {
    std::string problem = jobhost_plugins::first_error(jobhost_plugins::need_string(p, "campaign_id", 200),
                                                       jobhost_plugins::need_string(p, "tenant_id", 200));
    if (problem.empty() && type == "campaign.finish") {
      const auto b = p.find("batch");
      if (b == p.end() || !b->is_object() || !(*b)["failed"].is_number_integer() ||
          !(*b)["cancelled"].is_number_integer()) {
        problem = "payload.batch: required, the counts of the campaign's batch (its callback's payload)";
      }
    }
    return problem;
  }

  Result handle(Job& job) override {
    const std::string tenant = job.payload()["tenant_id"];
    const std::string campaign = job.payload()["campaign_id"];
    try {
      auto conn = pool_.acquire();
      if (job.type() == "campaign.finish") return complete(job, *conn, tenant, campaign);
      return fan_out(job, *conn, tenant, campaign);
    } catch (const pqxx::in_doubt_error& e) {
      // Harmless here: the next attempt reads the cursor, which moved only if
      // the page's jobs went in with it.
      return failed_attempt(job, tenant, campaign,
                            std::string("lost the connection to PostgreSQL while committing a page: ") + e.what());
    } catch (const pqxx::broken_connection& e) {
      return failed_attempt(job, tenant, campaign, std::string("lost the connection to PostgreSQL: ") + e.what());
    } catch (const std::exception& e) {
      return failed_attempt(job, tenant, campaign, e.what());
    }
  }

 private:
  Result fan_out(Job& job, pqxx::connection& conn, const std::string& tenant,
                 const std::string& campaign) {
    std::string list_id, template_id, batch;
    long long total = 0;
    // Named, so operators (and tests) can tell its sessions in pg_stat_activity.
    pqxx::nontransaction(conn).exec("SET application_name = 'jobhost campaign_process'");
    {
      pqxx::work tx(conn);
      const pqxx::result r = tx.exec_params(kLockCampaign, tenant, campaign);
      if (r.empty()) {
        return Result::permanent("payload.campaign_id: no campaign '" + campaign + "' for tenant '" +
                                 tenant + "'");
      }
      const std::string status = r[0][0].c_str();
      if (status == "sent" || status == "completed" || status == "cancelled") {
        if (status == "cancelled") {
          tx.exec_params(kCloseBatch, tenant, campaign);
          tx.commit();
        }
        job.log_info("campaign " + campaign + " is already " + status + "; nothing to do");
        return Result::ok();
      }
      list_id = r[0][1].c_str();
      template_id = r[0][2].c_str();
      batch = r[0][5].c_str();
      if (status != "sending" || batch.empty()) batch = tx.exec_params1(kStartSending, tenant, campaign)[0].c_str();
      const pqxx::result size = tx.exec_params(kListSize, tenant, list_id);
      if (!size.empty()) total = size[0][0].as<long long>();
      tx.commit();
      job.log_info("campaign " + campaign + ": fanning out list " + list_id + " from contact " +
                   r[0][3].c_str() + " (" + r[0][4].c_str() + " already enqueued)");
    }

    for (;;) {
      if (job.cancelled()) {
        return Result::retry("campaign " + campaign + ": stopped between pages as asked; "
                             "the next attempt resumes at the cursor");
      }
      pqxx::work tx(conn);
      // Re-read under the lock: another attempt may have moved the cursor, or
      // the application may have cancelled the campaign, since our last page.
      const pqxx::result c = tx.exec_params(kLockCampaign, tenant, campaign);
      if (c.empty()) return Result::permanent("payload.campaign_id: campaign '" + campaign +
                                              "' of tenant '" + tenant + "' was deleted while sending");
      const std::string status = c[0][0].c_str();
      if (status != "sending") {
        tx.exec_params(kCloseBatch, tenant, campaign);
        tx.commit();
        job.log_info("campaign " + campaign + " became " + status + " while sending; stopping");
        return Result::ok();
      }
      const long long cursor = c[0][3].as<long long>();
      const long long before = c[0][4].as<long long>();

      const pqxx::row page = tx.exec_params1(kFanOutPage, tenant, list_id, cursor, batch_size_,
                                             template_id, campaign, email_priority_, batch);
      const long long n = page[0].as<long long>();
      const long long last_id = page[1].as<long long>();
      const long long inserted = page[2].as<long long>();
      if (inserted != n) {
        throw std::runtime_error("campaign " + campaign + ": enqueued " + std::to_string(inserted) +
                                 " email.send jobs for a page of " + std::to_string(n) + " contacts");
      }
      if (n > 0) tx.exec_params(kAdvanceCursor, tenant, campaign, last_id, n);
      // A short page is the last one: finish in the same transaction.
      const bool last = n < batch_size_;
      if (last) tx.exec_params(kFinish, tenant, campaign);
      tx.commit();

      const long long done = before + n;
      job.heartbeat(total > 0 ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : -1.0);
      if (last) {
        job.log_info("campaign " + campaign + " sent: " + std::to_string(done) +
                     " email.send jobs enqueued in all");
        return Result::ok();
      }
    }
  }

  // The batch's callback: every email.send job of the campaign has ended.
  // Idempotent: a second callback (after a DLQ replay of a member) stores
  // the new counts.
  Result complete(Job& job, pqxx::connection& conn, const std::string& tenant, const std::string& campaign) {
    const nlohmann::json& b = job.payload()["batch"];
    const long long undelivered = b["failed"].get<long long>() + b["cancelled"].get<long long>();
    pqxx::work tx(conn);
    const pqxx::result r = tx.exec_params(kComplete, tenant, campaign, undelivered);
    if (r.empty()) {
      return Result::permanent("payload.campaign_id: no campaign '" + campaign + "' for tenant '" + tenant + "'");
    }
    tx.commit();
    job.log_info("campaign " + campaign + " " + r[0][0].c_str() + ": " + r[0][1].c_str() + " sent, " +
                 r[0][2].c_str() + " suppressed, " + r[0][3].c_str() + " failed, " + r[0][4].c_str() + " bounced");
    return Result::ok();
  }

  // Committed pages stay committed; the next attempt resumes at the cursor.
  Result failed_attempt(Job& job, const std::string& tenant, const std::string& campaign,
                        const std::string& why) {
    // On the last attempt the campaign would stay 'sending' forever; mark it
    // failed (best effort: the database may be what failed) so the
    // application can show it, and a DLQ replay resumes at the cursor.
    if (job.attempt() >= job.max_attempts()) mark_failed(job, tenant, campaign);
    return Result::retry("campaign " + campaign + ": " + why);
  }

  void mark_failed(Job& job, const std::string& tenant, const std::string& campaign) {
    try {
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      tx.exec_params(kMarkFailed, tenant, campaign);
      tx.commit();
    } catch (const std::exception& e) {
      job.log_warn("campaign " + campaign + ": could not mark it failed: " + e.what());
    }
  }

  jobhost_plugins::PgPool pool_;
  const int batch_size_;
  const int email_priority_;
};

}  // namespace

JOBHOST_PLUGIN(CampaignProcess, "campaign_process", "1.2.0", "campaign.process", "campaign.finish")
