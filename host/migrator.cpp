// migrator.cpp: batched claim in PostgreSQL, then push to Redis.
#include "migrator.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "dispatch.hpp"
#include "job_state.hpp"
#include "metrics.hpp"
#include "pg.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

// High band first, then normal, then low (jobhost.priority_band, the bands of
// the Redis lists); oldest run_at first within a band. Each band is a range
// scan of jobs_ready_band_idx; a band is read only if the ones before it
// leave room under the limit, and only the rows taken are locked.
const std::string kClaimSql = state_sql(R"sql(
WITH h AS (
  SELECT id FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 0
     AND status IN ({ready}) AND run_at <= now()
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
n AS (
  SELECT id FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 1
     AND status IN ({ready}) AND run_at <= now()
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
l AS (
  SELECT id FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 2
     AND status IN ({ready}) AND run_at <= now()
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
c AS (
  SELECT id FROM h UNION ALL SELECT id FROM n UNION ALL SELECT id FROM l LIMIT $2)
UPDATE jobhost.jobs j SET status = {migrated_to_redis}, updated_at = now()
  FROM c WHERE j.id = c.id
RETURNING j.id::text, j.priority)sql");

// Undo of a claim whose push to Redis failed.
const std::string kUnclaimSql = state_sql(R"sql(
UPDATE jobhost.jobs j SET status = {queued}, updated_at = now()
  FROM unnest($1::uuid[]) AS t(id)
 WHERE j.id = t.id AND j.status || '' = {migrated_to_redis}  -- see lease.cpp)sql");

// The earliest run_at of each queue and band: one index probe each.
const std::string kNextDueSql = state_sql(R"sql(
SELECT ceil(extract(epoch FROM min(d.run_at) - clock_timestamp()) * 1000)::bigint
  FROM unnest($1::text[]) AS q(name) CROSS JOIN generate_series(0, 2) AS b(band)
  CROSS JOIN LATERAL (
    SELECT run_at FROM jobhost.jobs
     WHERE queue_name = q.name AND jobhost.priority_band(priority) = b.band
       AND status IN ({ready})
     ORDER BY run_at LIMIT 1) d)sql");

// While some queue's window in Redis is full, look again this soon: fetchers
// empty it without telling the migrator.
constexpr long long kFullWindowRecheckMs = 20;

constexpr const char* kServedSql = R"sql(
SELECT name FROM jobhost.job_queues
 WHERE is_active AND served_at > now() - interval '30 seconds'
 ORDER BY name)sql";

}  // namespace

std::vector<std::string> served_queues(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  std::vector<std::string> out;
  for (const auto& row : exec_hot(tx, "jobhost_served", kServedSql)) out.emplace_back(row[0].c_str());
  return out;
}

Migrator::Migrator(const Config& config)
    : Service({.name = "migrator",
               .postgres_url = config.postgres_url,
               .redis_url = config.redis_url,
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(200),
               .max_backoff = std::chrono::milliseconds(2000)}),
      config_(config),
      wake_(listen_url_for(config)) {}

Migrator::~Migrator() = default;

size_t Migrator::migrate_queue(pqxx::connection& conn, Redis& redis, const std::string& queue,
                               PassResult& res) {
  const QueueKeys keys(config_.redis_key_prefix, queue);
  // The last count we saw: fetchers only lower it, so it is trusted while it
  // is low; near the limit, ask Redis. (Another migrator can add a batch
  // meanwhile: the limit is soft by one batch per migrator.)
  long long& waiting = waiting_[queue];
  if (waiting * 2 >= config_.migrator_max_in_redis) waiting = waiting_in_redis(redis, keys);
  const long long room = config_.migrator_max_in_redis - waiting;
  if (room <= 0) {
    res.window_full = true;
    return 0;
  }
  const int limit = static_cast<int>(std::min<long long>(config_.migrator_batch_size, room));
  std::vector<std::string> by_band[3];
  size_t claimed = 0;
  const auto batch_start = std::chrono::steady_clock::now();
  {
    // A single statement commits on its own (autocommit): one round trip
    // instead of BEGIN, UPDATE, COMMIT, on the path of every job.
    pqxx::nontransaction tx(conn);
    const pqxx::result r = exec_hot(tx, "jobhost_claim", kClaimSql.c_str(), queue, limit);
    claimed = r.size();
    for (const auto& row : r) {
      by_band[static_cast<int>(band_for_priority(row[1].as<int>()))].emplace_back(row[0].c_str());
    }
  }
  if (claimed == 0) return 0;
  if (claimed >= static_cast<size_t>(limit)) {
    // More may be ready: go again at once, or soon if the window is what stopped us.
    if (limit == config_.migrator_batch_size) res.full = true;
    else res.window_full = true;
  }
  try {
    for (Band b : kBandsInFetchOrder) {
      const auto& ids = by_band[static_cast<int>(b)];
      if (!ids.empty()) waiting = push_jobs(redis, keys, b, ids);
    }
  } catch (const RedisError&) {
    // Give the claim back so the jobs are not stranded until the reconciler.
    PgArray all;
    for (const auto& band : by_band)
      for (const auto& id : band) all.add(id);
    try {
      pqxx::nontransaction tx(conn);
      tx.exec_params(kUnclaimSql, all.str());
    } catch (const std::exception& e) {
      spdlog::warn("migrator: could not give back {} jobs after a Redis error ({}); the "
                   "reconciler will recover them", claimed, e.what());
    }
    throw;
  }
  Metrics::global().observe(
      "migrator_batch_seconds", {},
      std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_start).count());
  return claimed;
}

Migrator::PassResult Migrator::pass(pqxx::connection& conn, Redis& redis) {
  PassResult res;
  const std::vector<std::string> queues = served_queues(conn);
  for (const auto& q : queues) res.moved += migrate_queue(conn, redis, q, res);
  if (!res.full && !res.window_full && !queues.empty()) {
    PgArray names;
    for (const auto& q : queues) names.add(q);
    pqxx::nontransaction tx(conn);
    const pqxx::result due = exec_hot(tx, "jobhost_next_due", kNextDueSql.c_str(), names.str());
    const auto row = due.at(0);
    if (!row[0].is_null()) res.next_due_ms = std::max(0LL, row[0].as<long long>());
  }
  return res;
}

// A failed pass drops the LISTEN connection too: it may be as broken as pg().
void Migrator::pg_dropping() { wake_.reset(); }

std::chrono::milliseconds Migrator::run_once(std::stop_token stop) {
  pqxx::connection& conn = pg();
  wake_.listen();
  const auto t0 = std::chrono::steady_clock::now();
  const PassResult res = pass(conn, redis());
  if (res.moved > 0) {
    spdlog::debug("migrator: moved {} jobs to Redis in {} µs", res.moved,
                  std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - t0).count());
  }
  if (res.full) {
    wake_.drain();  // we are about to look again anyway
    return std::chrono::milliseconds(0);
  }
  long long wait_ms = config_.migrator_poll_interval_ms;
  if (res.window_full) wait_ms = kFullWindowRecheckMs;
  else if (res.next_due_ms >= 0) wait_ms = std::min(wait_ms, res.next_due_ms);
  // Sleep in slices so a stop request is noticed within 250 ms.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (!stop.stop_requested()) {
    const long long left = std::chrono::duration_cast<std::chrono::milliseconds>(
                               deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    const long long slice = std::min(left, 250LL);
    if (wake_.wait(std::chrono::milliseconds(slice))) break;
  }
  return std::chrono::milliseconds(0);
}

}  // namespace jobhost
