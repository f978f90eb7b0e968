// reconciler.cpp: PostgreSQL's view of Redis, checked and repaired.
#include "reconciler.hpp"

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "dispatch.hpp"
#include "job_state.hpp"
#include "pg.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

constexpr int kBatch = 5000;
constexpr std::chrono::milliseconds kMaxBackoff(5000);

const std::string kCandidatesSql = state_sql(R"sql(
SELECT id::text, queue_name, updated_at::text FROM jobhost.jobs
 WHERE status = {migrated_to_redis} AND updated_at < now() - $1 * interval '1 millisecond'
   AND updated_at >= $3::timestamptz
 ORDER BY updated_at
 LIMIT $2)sql");

// Where the next pass may start when this one finds no candidate: a job
// moved to Redis later than its cut-off, less a margin.
const std::string kNextFloorSql = "SELECT (now() - $1 * interval '1 millisecond' - interval '1 second')::text";

// Of the values a sweep read from Redis, the positions (1-based) of those that
// are not a waiting job's id: not an id as the host writes them (lower-case
// canonical UUID), or whose job is gone or in another state.
const std::string kOrphansSql = state_sql(R"sql(
SELECT t.n FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n)
  LEFT JOIN jobhost.jobs j
         ON j.id = CASE WHEN t.v ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                        THEN t.v::uuid END
 WHERE j.status IS DISTINCT FROM {migrated_to_redis})sql");

const std::string kQueuesSql = "SELECT name FROM jobhost.job_queues ORDER BY name";

const std::string kRequeueSql = state_sql(R"sql(
UPDATE jobhost.jobs j SET status = {queued}, updated_at = now()
  FROM unnest($1::uuid[]) AS t(id)
 WHERE j.id = t.id AND j.status || '' = {migrated_to_redis}  -- see lease.cpp
   AND j.updated_at < now() - $2 * interval '1 millisecond')sql");

}  // namespace

size_t Reconciler::pass(pqxx::connection& conn, Redis& redis) {
  std::vector<std::pair<std::string, std::string>> candidates;
  const auto began = ScanFloor::Clock::now();
  std::string next_floor;
  {
    pqxx::nontransaction tx(conn);
    // Taken before the candidates, so at or below their cut-off.
    next_floor = tx.exec_params1(kNextFloorSql, config_.reconciler_stale_after_ms)[0].c_str();
    const pqxx::result r =
        tx.exec_params(kCandidatesSql, config_.reconciler_stale_after_ms, kBatch, floor_.next(began));
    for (const auto& row : r) candidates.emplace_back(row[0].c_str(), row[1].c_str());
    // The oldest candidate stays one until it leaves Redis's care (leased, or
    // queued again below): the next pass starts with it.
    if (!r.empty()) next_floor = r[0][2].c_str();
  }
  floor_.passed(began, next_floor);
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

size_t Reconciler::sweep(pqxx::connection& conn, Redis& redis) {
  std::vector<std::string> queues;
  {
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec(kQueuesSql)) queues.emplace_back(row[0].c_str());
  }
  size_t removed = 0;
  for (const auto& q : queues) removed += sweep_queue(conn, redis, q);
  return removed;
}

size_t Reconciler::sweep_queue(pqxx::connection& conn, Redis& redis, const std::string& queue) {
  const QueueKeys keys(config_.redis_key_prefix, queue);
  SweepPosition& at = sweep_at_[queue];
  std::vector<std::string> read = scan_members(redis, keys, at.set_cursor, sweep_chunk_);
  std::array<std::vector<std::string>, 3> in_list;
  for (Band b : kBandsInFetchOrder) {
    const int i = static_cast<int>(b);
    in_list[i] = list_ids(redis, keys, b, at.list_start[i], sweep_chunk_);
    read.insert(read.end(), in_list[i].begin(), in_list[i].end());
  }
  std::set<std::string> orphans;
  if (!read.empty()) {
    PgArray values;
    for (const auto& v : read) values.add(v);
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec_params(kOrphansSql, values.str())) orphans.insert(read.at(row[0].as<size_t>() - 1));
  }
  const long long removed = remove_ids(redis, keys, {orphans.begin(), orphans.end()});
  // A list's next chunk starts after this one, less the orphans just taken
  // out of it; a short chunk was the list's end, and the next cycle starts
  // over. (Fetchers take from the head meanwhile, so an id can be skipped in
  // one cycle; the next one sees it.)
  for (Band b : kBandsInFetchOrder) {
    const int i = static_cast<int>(b);
    const auto& ids = in_list[i];
    if (ids.size() < sweep_chunk_) {
      at.list_start[i] = 0;
      continue;
    }
    const auto gone = std::count_if(ids.begin(), ids.end(), [&](const std::string& id) { return orphans.count(id); });
    at.list_start[i] += static_cast<long long>(ids.size()) - gone;
  }
  if (removed > 0) {
    spdlog::warn("reconciler: removed {} orphaned ids ({} entries) from the Redis keys of queue {}: their jobs are not {} "
                 "in PostgreSQL",
                 orphans.size(), removed, queue, to_text(JobState::kMigratedToRedis));
  }
  return static_cast<size_t>(removed);
}

Reconciler::Reconciler(const Config& config, size_t sweep_chunk, std::chrono::milliseconds full_every)
    : Service({.name = "reconciler",
               .postgres_url = config.postgres_url,
               .redis_url = config.redis_url,
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(config.reconciler_interval_ms),
               .max_backoff = std::max(std::chrono::milliseconds(config.reconciler_interval_ms), kMaxBackoff)}),
      config_(config),
      sweep_chunk_(std::max<size_t>(1, sweep_chunk)),
      floor_(full_every) {}

std::chrono::milliseconds Reconciler::run_once(std::stop_token) {
  pass(pg(), redis());
  sweep(pg(), redis());
  return std::chrono::milliseconds(config_.reconciler_interval_ms);
}

}  // namespace jobhost
