// reconciler.cpp: PostgreSQL's view of Redis, checked and repaired.
#include "reconciler.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "job_state.hpp"
#include "pg.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

constexpr int kBatch = 5000;
constexpr std::chrono::milliseconds kMaxBackoff(5000);

const std::string kCandidatesSql = state_sql(R"sql(
SELECT id::text, queue_name FROM jobhost.jobs
 WHERE status = {migrated_to_redis} AND updated_at < now() - $1 * interval '1 millisecond'
 ORDER BY updated_at
 LIMIT $2)sql");

const std::string kRequeueSql = state_sql(R"sql(
UPDATE jobhost.jobs j SET status = {queued}, updated_at = now()
  FROM unnest($1::uuid[]) AS t(id)
 WHERE j.id = t.id AND j.status || '' = {migrated_to_redis}  -- see lease.cpp
   AND j.updated_at < now() - $2 * interval '1 millisecond')sql");

}  // namespace

size_t Reconciler::pass(pqxx::connection& conn, Redis& redis) {
  std::vector<std::pair<std::string, std::string>> candidates;
  {
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec_params(kCandidatesSql, config_.reconciler_stale_after_ms, kBatch)) {
      candidates.emplace_back(row[0].c_str(), row[1].c_str());
    }
  }
  if (candidates.empty()) return 0;
  for (const auto& [id, queue] : candidates) {
    redis.append({"SISMEMBER", QueueKeys(config_.redis_key_prefix, queue).members(), id});
  }
  PgArray lost;
  size_t lost_count = 0;
  for (const auto& [id, queue] : candidates) {
    Reply r = redis.get_reply();
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
      lost.add(id);
      ++lost_count;
    }
  }
  if (lost_count == 0) return 0;
  pqxx::work tx(conn);
  const pqxx::result r = tx.exec_params(kRequeueSql, lost.str(), config_.reconciler_stale_after_ms);
  tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
  if (r.affected_rows() > 0) {
    spdlog::warn("reconciler: {} jobs were missing from Redis; queued them again",
                 r.affected_rows());
  }
  return r.affected_rows();
}

Reconciler::Reconciler(const Config& config)
    : Service({.name = "reconciler",
               .postgres_url = config.postgres_url,
               .redis_url = config.redis_url,
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(config.reconciler_interval_ms),
               .max_backoff = std::max(std::chrono::milliseconds(config.reconciler_interval_ms), kMaxBackoff)}),
      config_(config) {}

std::chrono::milliseconds Reconciler::run_once(std::stop_token) {
  pass(pg(), redis());
  return std::chrono::milliseconds(config_.reconciler_interval_ms);
}

}  // namespace jobhost
