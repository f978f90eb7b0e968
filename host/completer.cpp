// completer.cpp: the batched outcome writer.
#include "completer.hpp"

#include <spdlog/spdlog.h>

#include "batches.hpp"
#include "job_state.hpp"
#include "pg.hpp"

namespace jobhost {
namespace {

// The job_logs rows of the attempts a statement's `u` settled (those with a log status).
const std::string kLogRows = R"sql(
  INSERT INTO jobhost.job_logs (job_id, status, log_message, attempt_number, started_at,
                                finished_at, duration)
  SELECT id, log_status, message, attempt, to_timestamp(started_us / 1e6::float8),
         to_timestamp(finished_us / 1e6::float8), (finished_us - started_us) * interval '1 microsecond'
    FROM u WHERE log_status IS NOT NULL
)sql";

// The end of both statements below, after their guarded UPDATE u: what u
// returns, the job_logs rows (log_status: the row's status as logged; RETURNING
// sees the row as updated, so j.status is the next state), the batches'
// counts, and the closed batches touched (batches.hpp).
std::string settled(const std::string& log_status) {
  return state_sql(R"sql(
  RETURNING j.id, o.attempt, {log_status} AS log_status, o.message, o.started_us, o.finished_us,
            j.batch_id, {running} AS old_status, j.status AS new_status
), logged AS ({log_rows}), batch_tally AS ({batch_tally})
SELECT (SELECT count(*) FROM u), {batches_closed})sql",
                   {{"log_status", log_status},
                    {"log_rows", kLogRows},
                    {"batch_tally", batches::tally_cte("u")},
                    {"batches_closed", batches::closed_touched_sql()}});
}

// One statement per batch: guarded state change, then one job_logs row per
// attempt whose guard matched. o.status is the state the attempt led to
// (state_after, decided by the worker); the rules of job_state.hpp give the
// job's next state from it and a cancellation requested meanwhile
// (next_state), and the attempt's log row (attempt_log: a handed-back job
// gets its attempt back and no log row, since it never started).
const std::string kCompleteSql = state_sql(R"sql(
WITH o AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bigint[], $5::text[],
                       $6::bigint[], $7::bigint[])
      AS o(id, attempt, status, delay_ms, message, started_us, finished_us)
), u AS (
  UPDATE jobhost.jobs j SET
      status = {next_state},
      attempt_count = CASE WHEN o.status = {handed_back} THEN j.attempt_count - 1 ELSE j.attempt_count END,
      completed_at = CASE WHEN o.status = {completed} THEN to_timestamp(o.finished_us / 1e6::float8) END,
      failed_at = CASE WHEN {next_state} = {failed} THEN to_timestamp(o.finished_us / 1e6::float8) END,
      run_at = CASE WHEN o.status = {retry_scheduled}
                    THEN to_timestamp(o.finished_us / 1e6::float8) + o.delay_ms * interval '1 millisecond'
                    ELSE j.run_at END,
      last_error_message = coalesce(o.message, j.last_error_message),
      -- The worker that ran the attempt stays recorded; a handed-back job has none.
      worker_id = CASE WHEN o.status = {handed_back} THEN NULL ELSE j.worker_id END,
      lease_expires_at = NULL, updated_at = now()
    FROM o
   WHERE j.id = o.id AND j.attempt_count = o.attempt AND j.status || '' = {running}  -- see lease.cpp
{settled})sql",
    {{"next_state", sql_when_cancel_requested("o.status", "j.cancel_requested_at IS NOT NULL")},
     {"handed_back", sql_literal(state_after(AttemptEnd::kHandedBack, false))},
     {"settled", settled(sql_attempt_log({AttemptEnd::kSucceeded, AttemptEnd::kFailed,
                                          AttemptEnd::kFailedPermanently, AttemptEnd::kHandedBack},
                                         "j.status"))}});

// Attempts a limit held back (Result::throttled): back to waiting until
// run_at, the attempt given back, a 'throttled' job_logs row. Rare next to
// the statement above, so kept apart from it.
const std::string kThrottleSql = state_sql(R"sql(
WITH o AS (
  SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[])
      AS o(id, attempt, delay_ms, message, started_us, finished_us)
), u AS (
  UPDATE jobhost.jobs j SET
      status = {next_state},
      attempt_count = j.attempt_count - 1,
      run_at = to_timestamp(o.finished_us / 1e6::float8) + o.delay_ms * interval '1 millisecond',
      worker_id = NULL, lease_expires_at = NULL, updated_at = now()
    FROM o
   WHERE j.id = o.id AND j.attempt_count = o.attempt AND j.status || '' = {running}  -- see lease.cpp
{settled})sql",
    {{"next_state", sql_next_state(AttemptEnd::kThrottled, "false", "j.cancel_requested_at IS NOT NULL")},
     {"settled", settled(sql_attempt_log({AttemptEnd::kThrottled}, "j.status"))}});

}  // namespace

Completer::Completer(std::string pg_url, size_t max_batch)
    : Service({.name = "completer",
               .postgres_url = std::move(pg_url),
               .redis_url = {},
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(100),
               .max_backoff = std::chrono::milliseconds(1000),
               .hot_path = true}),
      max_batch_(max_batch) {}

Completer::~Completer() {
  if (thread_.joinable()) {
    thread_.request_stop();
    cv_.notify_all();
  }
}

void Completer::start() {
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void Completer::submit(Outcome o) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(o));
  }
  cv_.notify_one();
}

size_t Completer::flush_and_stop(std::chrono::milliseconds grace) {
  std::unique_lock lock(mu_);
  draining_ = true;
  cv_.notify_all();
  drained_cv_.wait_for(lock, grace, [&] { return queue_.empty() && in_flight_ == 0; });
  const size_t left = queue_.size() + in_flight_;
  lock.unlock();
  thread_.request_stop();
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  return left;
}

void Completer::pending_ids(std::unordered_set<std::string>& out) {
  std::lock_guard lock(mu_);
  for (const Outcome& o : queue_) out.insert(o.job_id);
  // batch_ changes only under mu_; the completer's thread reads it meanwhile.
  for (const Outcome& o : batch_) out.insert(o.job_id);
}

std::string Completer::failure_context() const {
  return "cannot write " + std::to_string(batch_.size()) + " outcomes yet";
}

std::chrono::milliseconds Completer::run_once(std::stop_token stop) {
  if (batch_.empty()) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, stop, [&] { return !queue_.empty(); });
    if (queue_.empty()) return std::chrono::milliseconds(0);  // stop requested
    // Whatever piled up while the last batch was being written goes next:
    // batches grow with load, and latency stays low when idle.
    const size_t n = std::min(queue_.size(), max_batch_);
    batch_.assign(std::make_move_iterator(queue_.begin()),
                  std::make_move_iterator(queue_.begin() + static_cast<long>(n)));
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(n));
    in_flight_ = batch_.size();
  }
  // A failure keeps the batch: it is written once PostgreSQL answers again.
  const size_t written = write(pg(), batch_);
  if (written < batch_.size()) stale_ += batch_.size() - written;
  std::vector<Outcome> done;  // freed after the lock below is released
  std::lock_guard lock(mu_);
  done.swap(batch_);
  in_flight_ = 0;
  if (queue_.empty()) drained_cv_.notify_all();
  return std::chrono::milliseconds(0);
}

size_t Completer::write(pqxx::connection& conn, const std::vector<Outcome>& batch) {
  PgArray ids, attempts, statuses, delays, messages, started, finished;
  PgArray t_ids, t_attempts, t_delays, t_messages, t_started, t_finished;
  size_t throttled = 0;
  for (const Outcome& o : batch) {
    if (o.kind == OutcomeKind::kThrottle) {
      ++throttled;
      t_ids.add(o.job_id);
      t_attempts.add(o.attempt);
      t_delays.add(o.delay_ms);
      t_messages.add(o.message);
      t_started.add(o.started_us);
      t_finished.add(o.finished_us);
      continue;
    }
    ids.add(o.job_id);
    attempts.add(o.attempt);
    statuses.add(outcome_status(o.kind));
    delays.add(o.delay_ms);
    if (o.message.empty()) {
      messages.add_null();
    } else {
      messages.add(o.message);
    }
    started.add(o.started_us);
    finished.add(o.finished_us);
  }
  // One statement, so autocommit is its transaction. If the connection drops
  // before the answer, the batch is written again: the attempt guard makes a
  // second write of a committed outcome match nothing.
  pqxx::nontransaction tx(conn);
  size_t written = 0;
  std::vector<std::string> closed;  // uuid[] of the batches these outcomes may have finished
  const auto take = [&](const pqxx::row& row) {
    written += row[0].as<size_t>();
    if (!row[1].is_null()) closed.push_back(row[1].c_str());
  };
  if (throttled > 0) {
    take(tx.exec_params1(kThrottleSql, t_ids.str(), t_attempts.str(), t_delays.str(), t_messages.str(),
                         t_started.str(), t_finished.str()));
  }
  if (throttled < batch.size()) {
    take(exec_hot(tx, "jobhost_complete", kCompleteSql.c_str(), ids.str(), attempts.str(), statuses.str(),
                  delays.str(), messages.str(), started.str(), finished.str())
             .at(0));
  }
  // Written: a batch left unfinished by a failure here is finished by the
  // reaper's sweep instead.
  for (const std::string& ids : closed) {
    try {
      batches::finish(conn, ids);
    } catch (const std::exception& e) {
      spdlog::warn("completer: finishing batches {}: {} (the reaper's sweep will)", ids, e.what());
    }
  }
  return written;
}

}  // namespace jobhost
