// reconciler.cpp: PostgreSQL's view of Redis, checked and repaired.
#include "reconciler.hpp"


#include <spdlog/spdlog.h>

#include "pg.hpp"
#include "stop_sleep.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

constexpr int kBatch = 5000;

constexpr const char* kCandidatesSql = R"sql(
SELECT id::text, queue_name FROM jobhost.jobs
 WHERE status = 'migrated_to_redis' AND updated_at < now() - $1 * interval '1 millisecond'
 ORDER BY updated_at
 LIMIT $2)sql";

constexpr const char* kRequeueSql = R"sql(
UPDATE jobhost.jobs j SET status = 'queued', updated_at = now()
  FROM unnest($1::uuid[]) AS t(id)
 WHERE j.id = t.id AND j.status || '' = 'migrated_to_redis'  -- see lease.cpp
   AND j.updated_at < now() - $2 * interval '1 millisecond')sql";

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

void Reconciler::run(std::stop_token stop) {
  Redis redis(config_.redis_url);
  std::unique_ptr<pqxx::connection> conn;
  int failures = 0;
  while (!stop.stop_requested()) {
    try {
      if (!conn || !conn->is_open()) conn = pg_connect(config_.postgres_url);
      pass(*conn, redis);
      failures = 0;
    } catch (const std::exception& e) {
      if (failures++ % 25 == 0) spdlog::warn("reconciler: {}; retrying", e.what());
      conn.reset();
      redis.reset();
    }
    sleep_unless_stopped(stop, std::chrono::milliseconds(config_.reconciler_interval_ms));
  }
}

}  // namespace jobhost
