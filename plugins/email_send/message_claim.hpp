// message_claim.hpp: the first attempt's database work before sending, for
// many workers at once: one statement claims the app.email_messages row of
// every message in the batch ('sending', committed before any relay is
// contacted), each only when its template is still the version the worker
// rendered and its campaign exists; a suppressed recipient's row is claimed
// as 'suppressed' with its email_events row. Each worker learns its
// template's and From domain's current versions, whether the campaign
// exists, its row (or that the row already existed: an earlier attempt's),
// and the suppression reason.
//
// A job id appears at most once per batch (GroupCommit's key): two attempts
// of one job in the same statement would both see the one inserted row.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <jobhost_plugins/pg_array.hpp>
#include <jobhost_plugins/pg_pool.hpp>

#include "group_commit.hpp"

namespace email_send {

struct ClaimRequest {
  std::string tenant, job_id;
  std::optional<std::string> campaign;
  std::string template_id, recipient, subject, message_id;
  int attempt = 1;
  std::string template_version;  // the updated_at the subject was rendered from
  std::string domain;            // the From address's domain
};

struct ClaimResult {
  std::optional<std::string> template_version;  // now; nullopt: no such template
  bool campaign_ok = false;
  std::optional<long long> row;                 // nullopt: not claimed
  std::string status;                           // of the claimed row: sending or suppressed
  std::string suppression;                      // the reason, when suppressed
  std::optional<std::string> domain_version;    // nullopt: no app.sending_domains row
};

// Every join is on the request's tenant. '' stands for no campaign (campaign
// ids are never '').
constexpr const char* kClaimBatch = R"sql(
WITH r AS (
  SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::int[], $9::text[], $10::text[]) WITH ORDINALITY
    AS r(tenant_id, job_id, campaign_id, template_id, recipient, subject, message_id, attempt, version, domain, ord)),
x AS (
  SELECT r.*, t.updated_at::text AS tv, s.reason, d.updated_at::text AS dv,
         r.campaign_id = '' OR EXISTS (SELECT 1 FROM app.campaigns c
                                        WHERE c.tenant_id = r.tenant_id AND c.id = r.campaign_id) AS camp_ok
    FROM r
    LEFT JOIN app.email_templates t ON t.tenant_id = r.tenant_id AND t.id = r.template_id
    LEFT JOIN app.suppressions s ON s.tenant_id = r.tenant_id AND s.email = r.recipient
    LEFT JOIN app.sending_domains d ON d.tenant_id = r.tenant_id AND d.domain = r.domain),
ins AS (
  INSERT INTO app.email_messages (tenant_id, job_id, campaign_id, template_id, recipient, subject, status,
                                  message_id, attempt, error)
  SELECT tenant_id, job_id, nullif(campaign_id, ''), template_id, recipient, subject,
         CASE WHEN reason IS NULL THEN 'sending' ELSE 'suppressed' END, message_id, attempt,
         'suppressed: ' || reason
    FROM x WHERE tv = version AND camp_ok ORDER BY ord
  ON CONFLICT (job_id) DO NOTHING
  RETURNING id, job_id, status),
ev AS (
  INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail)
  SELECT x.tenant_id, ins.id, nullif(x.campaign_id, ''), x.recipient, 'suppressed', jsonb_build_object('reason', x.reason)
    FROM ins JOIN x ON x.job_id = ins.job_id WHERE ins.status = 'suppressed')
SELECT x.tv, x.camp_ok, ins.id, ins.status, x.reason, x.dv
  FROM x LEFT JOIN ins ON ins.job_id = x.job_id ORDER BY x.ord)sql";

class MessageClaims {
 public:
  explicit MessageClaims(jobhost_plugins::PgPool& pool, size_t max_batch = 256)
      : pool_(pool),
        batches_([this](const std::vector<ClaimRequest>& r) { return run(r); }, max_batch,
                 [](const ClaimRequest& r) { return r.job_id; }) {}

  // Blocks until the batch holding this request is committed; throws
  // std::runtime_error when the statement failed (nothing was claimed).
  ClaimResult claim(ClaimRequest r) { return batches_.submit(std::move(r)); }

 private:
  std::vector<ClaimResult> run(const std::vector<ClaimRequest>& reqs) {
    using jobhost_plugins::pg_array;
    std::vector<std::string> cols[10];
    for (const ClaimRequest& r : reqs) {
      cols[0].push_back(r.tenant);
      cols[1].push_back(r.job_id);
      cols[2].push_back(r.campaign.value_or(""));
      cols[3].push_back(r.template_id);
      cols[4].push_back(r.recipient);
      cols[5].push_back(r.subject);
      cols[6].push_back(r.message_id);
      cols[7].push_back(std::to_string(r.attempt));
      cols[8].push_back(r.template_version);
      cols[9].push_back(r.domain);
    }
    pqxx::result rows;
    {
      auto conn = pool_.acquire();
      pqxx::nontransaction tx(*conn);
      rows = tx.exec_params(kClaimBatch, pg_array(cols[0]), pg_array(cols[1]), pg_array(cols[2]), pg_array(cols[3]),
                            pg_array(cols[4]), pg_array(cols[5]), pg_array(cols[6]), pg_array(cols[7]),
                            pg_array(cols[8]), pg_array(cols[9]));
    }
    std::vector<ClaimResult> out;
    out.reserve(rows.size());
    for (const auto& row : rows) {
      ClaimResult c;
      if (!row[0].is_null()) c.template_version = row[0].c_str();
      c.campaign_ok = row[1].as<bool>();
      if (!row[2].is_null()) c.row = row[2].as<long long>();
      if (!row[3].is_null()) c.status = row[3].c_str();
      if (!row[4].is_null()) c.suppression = row[4].c_str();
      if (!row[5].is_null()) c.domain_version = row[5].c_str();
      out.push_back(std::move(c));
    }
    return out;
  }

  jobhost_plugins::PgPool& pool_;
  GroupCommit<ClaimRequest, ClaimResult> batches_;
};

}  // namespace email_send
