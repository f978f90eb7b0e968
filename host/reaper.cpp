// reaper.cpp: expired leases back to the queue, or to the DLQ.
#include "reaper.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "batches.hpp"
#include "job_state.hpp"
#include "metrics.hpp"
#include "pg.hpp"

namespace jobhost {
namespace {

constexpr int kBatch = 1000;
constexpr std::chrono::milliseconds kMaxBackoff(5000);

// The next state and the log row come from the rules of job_state.hpp for an
// expired lease (next_state, attempt_log: 'stalled' when the job goes back).
const std::string kReapSql = state_sql(R"sql(
WITH expired AS (
  SELECT id FROM jobhost.jobs
   WHERE status = {running} AND lease_expires_at < now() AND lease_expires_at >= $2::timestamptz
   ORDER BY lease_expires_at
   LIMIT $1
   FOR UPDATE SKIP LOCKED
), u AS (
  UPDATE jobhost.jobs j SET
      status = {next_state},
      failed_at = CASE WHEN {next_state} = {failed} THEN now() END,
      last_error_message = 'lease expired during attempt ' || j.attempt_count || ' of ' ||
          j.max_attempts || ': worker ' || coalesce(j.worker_id, '?') ||
          ' stopped heartbeating (killed, crashed or stuck)',
      worker_id = NULL, lease_expires_at = NULL, updated_at = now()
    FROM expired e WHERE j.id = e.id
  RETURNING j.id, j.queue_name, j.status, j.last_error_message, j.attempt_count, j.started_at,
            j.batch_id, {running} AS old_status, j.status AS new_status
), batch_tally AS ({batch_tally}), logged AS (
  INSERT INTO jobhost.job_logs (job_id, status, log_message, attempt_number, started_at,
                                finished_at, duration)
  SELECT id, {log_status}, last_error_message, attempt_count, started_at, now(), now() - started_at
    FROM u
)
SELECT id::text, queue_name, status, attempt_count, {batches_closed} FROM u)sql",
    {{"next_state", sql_next_state(AttemptEnd::kLeaseExpired, sql_is_last_attempt("j.attempt_count", "j.max_attempts"),
                                   "j.cancel_requested_at IS NOT NULL")},
     {"log_status", sql_attempt_log({AttemptEnd::kLeaseExpired}, "status")},
     {"batch_tally", batches::tally_cte("u")},
     {"batches_closed", batches::closed_touched_sql()}});

}  // namespace

size_t Reaper::pass(pqxx::connection& conn) {
  const auto began = ScanFloor::Clock::now();
  pqxx::work tx(conn);
  // A lease this pass does not see expired yet ends after its now(): leases
  // are set to expire lease_ms after they are taken or extended, never in
  // the past. So the next pass may start there, less a margin; what this
  // one skipped (locked by another transaction) the next full pass finds.
  const std::string next_floor = tx.exec1("SELECT (now() - interval '1 second')::text")[0].c_str();
  const pqxx::result r = tx.exec_params(kReapSql, kBatch, floor_.next(began));
  if (!r.empty()) tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
  // A whole batch may have left expired leases behind: start there again.
  floor_.passed(began, r.size() < static_cast<size_t>(kBatch) ? std::optional(next_floor) : std::nullopt);
  if (!r.empty() && !r[0][4].is_null()) batches::finish(conn, r[0][4].c_str());
  for (const auto& row : r) {
    // A lease that expired on the last attempt dead-letters the job here, not in a worker.
    if (row[2].c_str() == to_text(JobState::kFailed)) {
      Metrics::global().inc("jobs_failed_total", {{"queue", row[1].c_str()}});
    }
    spdlog::warn("job {} type={} attempt={}: lease expired; now {}", row[0].c_str(),
                 row[1].c_str(), row[3].as<int>(), row[2].c_str());
  }
  return r.size();
}

Reaper::Reaper(const Config& config, std::chrono::milliseconds full_every)
    : Service({.name = "reaper",
               .postgres_url = config.postgres_url,
               .redis_url = {},
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(config.reaper_interval_ms),
               .max_backoff = std::max(std::chrono::milliseconds(config.reaper_interval_ms), kMaxBackoff)}),
      interval_(config.reaper_interval_ms),
      floor_(full_every) {}

std::chrono::milliseconds Reaper::run_once(std::stop_token) {
  const size_t reaped = pass(pg());
  // Every pass by the counts; at start and about once a minute by the members themselves.
  const bool by_counts = ++sweeps_ % std::max<int64_t>(1, 60000 / std::max<int64_t>(1, interval_.count())) != 0;
  if (const int finished = batches::sweep(pg(), by_counts); finished > 0) {
    spdlog::info("reaper: the sweep finished {} batches",
                 finished);
  }
  return reaped >= static_cast<size_t>(kBatch) ? std::chrono::milliseconds(0) : interval_;
}

}  // namespace jobhost
