// migrator.cpp: batched claim in PostgreSQL, then push to Redis.
#include "migrator.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "dispatch.hpp"
#include "job_state.hpp"
#include "lease.hpp"
#include "metrics.hpp"
#include "pg.hpp"
#include "routing.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

// High band first, then normal, then low (jobhost.priority_band, the bands of
// the Redis lists); oldest run_at first within a band. Each band is a range
// scan of jobs_ready_band_idx; a band is read only if the ones before it
// leave room under the limit, and only the rows taken are locked.
// Each band's scan starts at its ClaimFloors bound ($3, $4, $5; NULL: none).
constexpr const char* kClaimBands = R"sql(
WITH h AS (
  SELECT id, 0 AS band FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 0
     AND status IN ({ready}) AND run_at <= now()
     AND run_at >= coalesce(timestamptz 'epoch' + $3::bigint * interval '1 microsecond', '-infinity') {unpaused}
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
n AS (
  SELECT id, 1 AS band FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 1
     AND status IN ({ready}) AND run_at <= now()
     AND run_at >= coalesce(timestamptz 'epoch' + $4::bigint * interval '1 microsecond', '-infinity') {unpaused}
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
l AS (
  SELECT id, 2 AS band FROM jobhost.jobs
   WHERE queue_name = $1 AND jobhost.priority_band(priority) = 2
     AND status IN ({ready}) AND run_at <= now()
     AND run_at >= coalesce(timestamptz 'epoch' + $5::bigint * interval '1 microsecond', '-infinity') {unpaused}
   ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED),
c AS (
  SELECT id, band FROM h UNION ALL SELECT id, band FROM n UNION ALL SELECT id, band FROM l LIMIT $2))sql";

const std::string kClaimSql = state_sql(std::string(kClaimBands) + R"sql(
UPDATE jobhost.jobs j SET status = {migrated_to_redis}, updated_at = now()
  FROM c, {async_commit} WHERE j.id = c.id
RETURNING j.id::text, j.priority, coalesce(j.flow_key, ''), c.band,
          (extract(epoch FROM j.run_at) * 1000000)::bigint)sql",
                                        {{"async_commit", kAsyncCommitFrom}, {"unpaused", ""}});

// The same claim leasing the jobs at once for the workers of this host
// ($6 worker id, $7 lease ms; Migrator::direct_lease), unless the queue is
// paused: the lease columns (lease.hpp), then band and run_at as above.
const std::string kClaimLeaseSql = state_sql(
    std::string(kClaimBands) + R"sql(
UPDATE jobhost.jobs j SET {lease_set}
  FROM c, {async_commit} WHERE j.id = c.id
RETURNING {leased}, c.band, (extract(epoch FROM j.run_at) * 1000000)::bigint)sql",
    {{"async_commit", kAsyncCommitFrom},
     {"unpaused",
      "AND NOT EXISTS (SELECT 1 FROM jobhost.job_queues q WHERE q.name = $1 AND q.paused_at IS NOT NULL)"},
     {"lease_set", lease_set_sql("$6", "$7")},
     {"leased", kLeasedColumns}});

// Records in `floors` the oldest run_at that each band of a claim took, and
// a rescan's end. `band` and `run_at` are the claim's columns holding them.
void record_floors(const pqxx::result& r, int band, int run_at, const ClaimFloors::Bounds& bounds,
                   std::chrono::steady_clock::time_point began, ClaimFloors& floors) {
  if (bounds == ClaimFloors::Bounds{}) floors.rescanned(began, std::chrono::steady_clock::now() - began);
  ClaimFloors::Bounds oldest;
  for (const auto& row : r) {
    const int b = row[band].as<int>();
    const int64_t at = row[run_at].as<int64_t>();
    if (!oldest[b] || at < *oldest[b]) oldest[b] = at;
  }
  for (int b = 0; b < 3; ++b) {
    if (oldest[b]) floors.took(b, *oldest[b]);
  }
}

}  // namespace

pqxx::result claim_plain(pqxx::connection& conn, const std::string& queue, int limit, ClaimFloors& floors) {
  const auto began = std::chrono::steady_clock::now();
  const ClaimFloors::Bounds bounds = floors.next(began);
  // A single statement commits on its own (autocommit): one round trip
  // instead of BEGIN, UPDATE, COMMIT, on the path of every job.
  pqxx::nontransaction tx(conn);
  pqxx::result r = exec_hot(tx, "jobhost_claim", kClaimSql.c_str(), queue, limit, bounds[0], bounds[1], bounds[2]);
  record_floors(r, 3, 4, bounds, began, floors);
  return r;
}

std::vector<LeasedJob> claim_leased(pqxx::connection& conn, const std::string& queue, int limit,
                                    ClaimFloors& floors, const std::string& worker_id, int64_t lease_ms) {
  const auto began = std::chrono::steady_clock::now();
  const ClaimFloors::Bounds bounds = floors.next(began);
  pqxx::nontransaction tx(conn);
  const pqxx::result r = exec_hot(tx, "jobhost_claim_lease", kClaimLeaseSql.c_str(), queue, limit, bounds[0],
                                  bounds[1], bounds[2], worker_id, lease_ms);
  const int cols = r.columns();
  record_floors(r, cols - 2, cols - 1, bounds, began, floors);
  return leased_jobs(r);
}

namespace {

// The fair claim of one band (DESIGN §9): walks the band's keys of queue $1
// in order from key $3 (inclusive) up to key $4 (exclusive; NULL: the last
// key), at most $7 of them, one probe of jobs_flow_ready_idx each, and takes
// up to $5 due jobs of each, oldest first, $6 in all. The walk is evaluated
// only as far as the LIMIT needs, so a claim costs the keys it takes from.
// Keys are compared as jobhost.flow_slot(queue, key), and no condition names
// queue_name itself: only that index can serve these statements (009_flow.sql).
const std::string kFairClaimSql = state_sql(R"sql(
WITH RECURSIVE k(slot, n) AS (
  (SELECT jobhost.flow_slot(queue_name, flow_key), 1 FROM jobhost.jobs
    WHERE jobhost.priority_band(priority) = $2 AND status IN ({ready}) AND flow_key IS NOT NULL
      AND jobhost.flow_slot(queue_name, flow_key) >= jobhost.flow_slot($1, $3)
    ORDER BY 1 LIMIT 1)
  UNION ALL
  SELECT (SELECT jobhost.flow_slot(j.queue_name, j.flow_key) FROM jobhost.jobs j
           WHERE jobhost.priority_band(j.priority) = $2 AND j.status IN ({ready}) AND j.flow_key IS NOT NULL
             AND jobhost.flow_slot(j.queue_name, j.flow_key) > k.slot
           ORDER BY 1 LIMIT 1), k.n + 1
    FROM k
   WHERE starts_with(k.slot, jobhost.flow_slot($1, '')) AND k.n < $7
     AND ($4::text IS NULL OR k.slot < jobhost.flow_slot($1, $4))
),
c AS (
  SELECT t.id FROM k CROSS JOIN LATERAL (
    SELECT j.id FROM jobhost.jobs j
     WHERE jobhost.priority_band(j.priority) = $2 AND j.status IN ({ready}) AND j.flow_key IS NOT NULL
       AND jobhost.flow_slot(j.queue_name, j.flow_key) = k.slot AND j.run_at <= now()
     ORDER BY j.run_at LIMIT $5 FOR UPDATE SKIP LOCKED) t
   WHERE starts_with(k.slot, jobhost.flow_slot($1, ''))
     AND ($4::text IS NULL OR k.slot < jobhost.flow_slot($1, $4))
   LIMIT $6)
UPDATE jobhost.jobs j SET status = {migrated_to_redis}, updated_at = now()
  FROM c, {async_commit} WHERE j.id = c.id
RETURNING j.id::text, j.flow_key)sql",
                                                {{"async_commit", kAsyncCommitFrom}});

// Undo of a claim whose push to Redis failed.
const std::string kUnclaimSql = state_sql(R"sql(
UPDATE jobhost.jobs j SET status = {queued}, updated_at = now()
  FROM unnest($1::uuid[]) AS t(id), {async_commit}
 WHERE j.id = t.id AND j.status || '' = {migrated_to_redis}  -- see lease.cpp)sql",
                                              {{"async_commit", kAsyncCommitFrom}});

// The earliest run_at of each queue and band: one index probe each, from
// the band's ClaimFloors bound ($2, aligned with $1 as queue x band; NULL: none).
const std::string kNextDueSql = state_sql(R"sql(
SELECT ceil(extract(epoch FROM min(d.run_at) - clock_timestamp()) * 1000)::bigint
  FROM unnest($1::text[], $2::int[], $3::bigint[]) AS q(name, band, floor_us)
  CROSS JOIN LATERAL (
    SELECT run_at FROM jobhost.jobs
     WHERE queue_name = q.name AND jobhost.priority_band(priority) = q.band
       AND status IN ({ready})
       AND run_at >= coalesce(timestamptz 'epoch' + q.floor_us * interval '1 microsecond', '-infinity')
     ORDER BY run_at LIMIT 1) d)sql");

// The oldest ready run_at below each floor (FloorProbe): one probe of
// jobs_ready_band_idx per queue and band that has one, which walks every
// entry claimed jobs left below the floor until it finds a ready one.
const std::string kBelowFloorSql = state_sql(R"sql(
SELECT q.name, q.band, (extract(epoch FROM d.run_at) * 1000000)::bigint
  FROM unnest($1::text[], $2::int[], $3::bigint[]) AS q(name, band, floor_us)
  CROSS JOIN LATERAL (
    SELECT run_at FROM jobhost.jobs
     WHERE queue_name = q.name AND jobhost.priority_band(priority) = q.band
       AND status IN ({ready}) AND run_at <= now()
       AND run_at < timestamptz 'epoch' + q.floor_us * interval '1 microsecond'
     ORDER BY run_at LIMIT 1) d)sql");

// While some queue's window in Redis is full, look again this soon: fetchers
// empty it without telling the migrator.
constexpr long long kFullWindowRecheckMs = 20;

constexpr const char* kServedSql = R"sql(
SELECT name, flow_keyed, flow_fair FROM jobhost.job_queues
 WHERE is_active AND served_at > now() - interval '30 seconds'
 ORDER BY name)sql";

// The smallest text after `key` in the C collation: the next claim's first key.
std::string after(const std::string& key) { return key + '\x01'; }

}  // namespace

std::vector<ServedQueue> served_queues(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  std::vector<ServedQueue> out;
  for (const auto& row : exec_hot(tx, "jobhost_served", kServedSql)) {
    out.push_back({row[0].c_str(), row[1].as<bool>(), row[2].as<bool>()});
  }
  return out;
}

bool Migrator::claim_fair(pqxx::connection& conn, const std::string& queue, int band, int limit,
                          std::vector<KeyedId>& out) {
  bool more = false;
  Turn& turn = turns_[{queue, band}];
  // Each key's share of a batch, from how many keys took part in the last
  // round: one key alone gets the whole batch (work-conserving). At least
  // kMinQuota, so a batch over many small keys probes fewer of them: Redis
  // still hands them out one job per key in turn, and a key's share stays far
  // below the Redis window, which is what the claim's fairness protects.
  constexpr int kMinQuota = 16;
  // At most kMaxQuota while several keys take part, so a claim over a few
  // keys with deep backlogs stays short: a job of another key enqueued
  // meanwhile waits for the claim in progress before the next one takes it
  // (measured while one key drained a million and a small key had 1,000 jobs
  // a second: the small key's start p50 36 -> 16 ms with claims of 200,
  // 18 -> 13 ms and p99 55-90 -> 37-50 ms with 64; with 32 the big key's
  // drain fell by a third). A key alone may take kMaxQuotaAlone: no other
  // key waits, and its drain needs fewer passes.
  constexpr int kMaxQuota = 64;
  constexpr int kMaxQuotaAlone = 200;
  const int max_quota = turn.keys_last_round > 1 ? kMaxQuota : kMaxQuotaAlone;
  const int quota = std::clamp<int>(static_cast<int>((static_cast<size_t>(limit) + turn.keys_last_round - 1) /
                                                     std::max<size_t>(1, turn.keys_last_round)),
                                    kMinQuota, max_quota);
  const int max_keys = std::max(64, 4 * limit);
  const auto claim = [&](const std::string& from, const std::optional<std::string>& stop, int want) {
    pqxx::nontransaction tx(conn);
    const pqxx::result r = exec_hot(tx, "jobhost_claim_fair", kFairClaimSql.c_str(), queue, band, from, stop, quota,
                                    want, max_keys);
    std::string last;
    std::map<std::string, int> per_key;
    for (const auto& row : r) {
      out.push_back({row[0].c_str(), row[1].c_str()});
      turn.keys_this_round.insert(out.back().key);
      last = std::max(last, out.back().key);
      // A key that filled its quota may have more due: claim again at once.
      if (++per_key[out.back().key] >= quota) more = true;
    }
    return std::make_pair(r.size(), last);
  };
  const std::string start = turn.cursor;
  auto [n, last] = claim(start, std::nullopt, limit);
  bool round_over = static_cast<int>(n) < limit;
  if (round_over && !start.empty()) {
    // Past the last key: on from the first, up to where this claim began.
    auto [m, last2] = claim("", start, limit - static_cast<int>(n));
    n += m;
    if (m > 0) last = last2;
    round_over = static_cast<int>(n) < limit;
  }
  if (round_over) {
    turn.cursor.clear();
    turn.keys_last_round = std::max<size_t>(1, turn.keys_this_round.size());
    turn.keys_this_round.clear();
  } else {
    turn.cursor = after(last);
  }
  return more || !round_over;
}

FloorProbe::FloorProbe(const Config& config, std::shared_ptr<FloorShare> share)
    : Service({.name = "migrator floor probe",
               .postgres_url = config.postgres_url,
               .redis_url = {},
               .first_pass_after = ClaimFloors::kRescan,
               .backoff = std::chrono::milliseconds(200),
               .max_backoff = std::chrono::milliseconds(2000),
               .hot_path = true}),
      share_(std::move(share)) {}

size_t FloorProbe::pass(pqxx::connection& conn) {
  PgArray names, bands, floors;
  {
    std::lock_guard lock(share_->mu);
    for (const auto& [queue, bounds] : share_->floors) {
      for (int band = 0; band < 3; ++band) {
        if (!bounds[band]) continue;
        names.add(queue);
        bands.add(static_cast<long long>(band));
        floors.add(static_cast<long long>(*bounds[band]));
      }
    }
  }
  if (names.empty()) return 0;
  pqxx::nontransaction tx(conn);
  const pqxx::result r =
      exec_hot(tx, "jobhost_below_floor", kBelowFloorSql.c_str(), names.str(), bands.str(), floors.str());
  std::lock_guard lock(share_->mu);
  for (const auto& row : r) {
    auto& below = share_->below[row[0].c_str()].at(row[1].as<int>());
    const int64_t run_at = row[2].as<int64_t>();
    if (!below || run_at < *below) below = run_at;
  }
  return r.size();
}

std::chrono::milliseconds FloorProbe::run_once(std::stop_token) {
  const auto began = std::chrono::steady_clock::now();
  if (const size_t found = pass(pg()); found > 0) {
    spdlog::debug("migrator floor probe: ready jobs below the claims' floors in {} bands", found);
  }
  return std::max<std::chrono::milliseconds>(
      ClaimFloors::kRescan, std::chrono::duration_cast<std::chrono::milliseconds>(
                                (std::chrono::steady_clock::now() - began) * ClaimFloors::kRescanShare));
}

bool Migrator::start_up() {
  floor_probe_ = std::make_unique<FloorProbe>(config_, floor_share_);
  floor_probe_thread_ = std::jthread([probe = floor_probe_.get()](std::stop_token st) { probe->run(st); });
  return true;
}

ClaimFloors& Migrator::floors_of(const std::string& queue) {
  // Without the probe (pass() called on its own), claims rescan themselves.
  ClaimFloors& floors = floors_.try_emplace(queue, floor_probe_ == nullptr).first->second;
  std::lock_guard lock(floor_share_->mu);
  if (const auto below = floor_share_->below.find(queue); below != floor_share_->below.end()) {
    for (int band = 0; band < 3; ++band) {
      if (below->second[band]) floors.lower(band, *below->second[band]);
    }
    floor_share_->below.erase(below);
  }
  // The probe looks below the floors as the last claim left them.
  floor_share_->floors[queue] = floors.current();
  return floors;
}

Migrator::Migrator(const Config& config, Pools pools)
    : Service({.name = "migrator",
               .postgres_url = config.postgres_url,
               .redis_url = config.redis_url,
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(200),
               .max_backoff = std::chrono::milliseconds(2000),
               .hot_path = true}),
      config_(config),
      pools_(config.migrator_direct_lease ? std::move(pools) : Pools{}),
      wake_(listen_url_for(config)) {}

std::shared_ptr<WorkerPool> Migrator::local_pool(const std::string& queue) const {
  if (!pools_) return nullptr;
  for (auto& pool : pools_()) {
    if (pool->serves(queue)) return pool;
  }
  return nullptr;
}

std::pair<size_t, bool> Migrator::direct_lease(pqxx::connection& conn, WorkerPool& pool, const std::string& queue,
                                               int limit) {
  const size_t reserved = pool.reserve(static_cast<size_t>(limit));
  if (reserved == 0) return {0, false};
  std::vector<LeasedJob> jobs;
  try {
    jobs = claim_leased(conn, queue, static_cast<int>(reserved), floors_of(queue),
                        config_.host_id + "/" + pool.name(), config_.lease_duration_ms);
  } catch (...) {
    pool.take_reserved({}, reserved);
    pool.lease_answer_lost();  // it may have committed (WorkerPool::lease_answer_lost)
    throw;
  }
  const size_t n = jobs.size();
  pool.take_reserved(std::move(jobs), reserved);
  if (n > 0) Metrics::global().inc("jobs_direct_leased_total", {{"queue", queue}}, static_cast<double>(n));
  return {n, n == reserved};
}

Migrator::~Migrator() = default;

size_t Migrator::migrate_queue(pqxx::connection& conn, Redis& redis, const ServedQueue& served,
                               PassResult& res) {
  const std::string& queue = served.name;
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
  std::vector<KeyedId> by_band[3];
  size_t claimed = 0;  // for Redis
  size_t direct = 0;   // leased to this host's workers (direct_lease)
  bool more_due = false;  // the fair claim stopped at keys' quotas, not for want of jobs
  const auto batch_start = std::chrono::steady_clock::now();
  if (served.keyed && served.fair) {
    // Keys take turns: band by band, each band's keys from where the last claim stopped.
    for (Band b : kBandsInFetchOrder) {
      const int band = static_cast<int>(b);
      if (static_cast<int>(claimed) >= limit) break;
      if (claim_fair(conn, queue, band, limit - static_cast<int>(claimed), by_band[band])) more_due = true;
      claimed += by_band[band].size();
    }
  } else {
    // Jobs for this host's free workers first, while none wait in Redis (older
    // ones go first there), the rest to Redis. The count we keep only falls
    // behind upwards (fetchers lower it): ask Redis when it is not 0.
    bool more = false;
    if (const auto pool = local_pool(queue)) {
      if (waiting > 0) waiting = waiting_in_redis(redis, keys);
      if (waiting == 0) std::tie(direct, more) = direct_lease(conn, *pool, queue, limit);
    }
    if (direct > 0 && !more) return direct;  // that was all that was ready
    if (static_cast<int>(direct) < limit) {
      const pqxx::result r = claim_plain(conn, queue, limit - static_cast<int>(direct), floors_of(queue));
      claimed = r.size();
      for (const auto& row : r) by_band[row[3].as<int>()].push_back({row[0].c_str(), row[2].c_str()});
    }
  }
  if (claimed + direct == 0) return 0;
  if (more_due && claimed < static_cast<size_t>(limit)) res.full = true;
  if (claimed + direct >= static_cast<size_t>(limit)) {
    // More may be ready: go again at once, or soon if the window is what stopped us.
    if (limit == config_.migrator_batch_size) res.full = true;
    else res.window_full = true;
  }
  try {
    for (Band b : kBandsInFetchOrder) {
      const auto& jobs = by_band[static_cast<int>(b)];
      if (jobs.empty()) continue;
      if (served.keyed) {
        waiting = push_keyed(redis, keys, b, jobs);
        continue;
      }
      std::vector<std::string> ids;
      ids.reserve(jobs.size());
      for (const auto& j : jobs) ids.push_back(j.id);
      waiting = push_jobs(redis, keys, b, ids);
    }
  } catch (const RedisError&) {
    // Give the claim back so the jobs are not stranded until the reconciler.
    PgArray all;
    for (const auto& band : by_band)
      for (const auto& j : band) all.add(j.id);
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
  return claimed + direct;
}

const std::vector<ServedQueue>& Migrator::served(pqxx::connection& conn, std::chrono::steady_clock::time_point now) {
  if (served_.empty() || now >= served_read_at_ + kServedRefresh) {
    served_ = served_queues(conn);
    served_read_at_ = now;
  }
  return served_;
}

Migrator::PassResult Migrator::pass(pqxx::connection& conn, Redis& redis) {
  PassResult res;
  const std::vector<ServedQueue>& queues = served(conn, std::chrono::steady_clock::now());
  for (const auto& q : queues) res.moved += migrate_queue(conn, redis, q, res);
  if (res.full || res.window_full || queues.empty()) return res;
  const auto now = std::chrono::steady_clock::now();
  if (now < probe_allowed_at_) {
    // Probed a moment ago: wake by the earlier of its answer and the next probe.
    // (An answer already past was due by the claims of this pass.)
    auto wake_at = probe_allowed_at_;
    if (next_due_at_ && *next_due_at_ > now) wake_at = std::min(wake_at, *next_due_at_);
    res.next_due_ms = std::max<long long>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - now).count() + 1);
    return res;
  }
  probe_allowed_at_ = now + kProbeEvery;
  PgArray names, bands, bounds;
  for (const auto& q : queues) {
    // Keyed queues' claims have no floors; a plain queue's probe starts where its claims do.
    const auto f = floors_.find(q.name);
    const ClaimFloors::Bounds b =
        f == floors_.end() || q.keyed || now >= f->second.rescan_at() ? ClaimFloors::Bounds{} : f->second.current();
    for (int band = 0; band < 3; ++band) {
      names.add(q.name);
      bands.add(static_cast<long long>(band));
      if (b[band]) bounds.add(static_cast<long long>(*b[band]));
      else bounds.add_null();
    }
  }
  pqxx::nontransaction tx(conn);
  const pqxx::result due =
      exec_hot(tx, "jobhost_next_due", kNextDueSql.c_str(), names.str(), bands.str(), bounds.str());
  const auto row = due.at(0);
  next_due_at_.reset();
  if (!row[0].is_null()) {
    res.next_due_ms = std::max(0LL, row[0].as<long long>());
    next_due_at_ = now + std::chrono::milliseconds(res.next_due_ms);
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
