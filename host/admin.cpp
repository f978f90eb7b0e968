// admin.cpp: operator queries and state changes (see admin.hpp).
#include "admin.hpp"

#include <cctype>
#include <optional>
#include <stdexcept>

#include "batches.hpp"
#include "pg.hpp"
#include "job_state.hpp"

namespace jobhost::admin {
namespace {

constexpr const char* kJobSql = R"sql(
SELECT id::text, queue_name, status, priority, payload::text, attempt_count, max_attempts,
       to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       last_error_message, worker_id,
       to_char(lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       unique_key,
       to_char(cancel_requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       progress, flow_key, batch_id::text
  FROM jobhost.jobs WHERE id = $1::uuid)sql";

// Through the running state's partial index (the reaper's), oldest first.
const std::string kRunningSql = state_sql(R"sql(
SELECT id::text, queue_name, attempt_count, max_attempts, coalesce(worker_id, ''),
       to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), progress
  FROM jobhost.jobs WHERE status = {running} AND lease_expires_at IS NOT NULL
 ORDER BY lease_expires_at LIMIT $1)sql");

// Waiting jobs per queue and band come from the partial indexes of the live
// states, one branch per index ({ready}, {migrated_to_redis} and {running}
// are every live state): as one `status IN ({live})` no partial index
// matches, and the count read the whole table (55 ms with 300,000 retained
// jobs, growing with the history). The dead-lettered count comes from the DLQ
// index, the last minute's attempts from jobhost.attempt_counts (sql/020):
// this minute so far, and the share of the minute before that lies within
// the last 60 s (an estimate that assumes that minute's pace was even). So
// the query stays cheap with millions of jobs and at any throughput. Run as
// a prepared statement (exec_hot): planning it took about 1 ms, ten times
// its execution on a small queue, on every call of the dashboard, the
// metrics gauges and GET /api/v1/queues.
// The live states are exactly those of kQueuesSql's three branches.
static_assert([] {
  for (JobState s : kJobStates) {
    const bool branch = is_ready(s) || s == JobState::kMigratedToRedis || s == JobState::kRunning;
    if (branch == is_terminal(s)) return false;
  }
  return true;
}());
const std::string kQueuesSql = state_sql(R"sql(
WITH live AS (
  SELECT queue_name, jobhost.priority_band(priority) AS band, status, count(*) AS n
    FROM jobhost.jobs WHERE status IN ({ready}) GROUP BY 1, 2, 3
  UNION ALL
  SELECT queue_name, jobhost.priority_band(priority), status, count(*)
    FROM jobhost.jobs WHERE status = {migrated_to_redis} GROUP BY 1, 2, 3
  UNION ALL
  SELECT queue_name, jobhost.priority_band(priority), status, count(*)
    FROM jobhost.jobs WHERE status = {running} GROUP BY 1, 2, 3
), dead AS (
  SELECT queue_name, count(*) AS n FROM jobhost.jobs WHERE status = {failed} GROUP BY 1
), recent AS (
  SELECT queue_name, status,
         round(sum(n * CASE WHEN minute = date_trunc('minute', now()) THEN 1
                            ELSE 1 - extract(epoch FROM now() - date_trunc('minute', now())) / 60 END))::bigint AS n
    FROM jobhost.attempt_counts
   WHERE minute BETWEEN date_trunc('minute', now()) - interval '1 minute' AND date_trunc('minute', now())
   GROUP BY 1, 2
)
SELECT q.name,
       coalesce(sum(l.n) FILTER (WHERE l.status <> {running} AND l.band = 0), 0),
       coalesce(sum(l.n) FILTER (WHERE l.status <> {running} AND l.band = 1), 0),
       coalesce(sum(l.n) FILTER (WHERE l.status <> {running} AND l.band = 2), 0),
       coalesce(sum(l.n) FILTER (WHERE l.status = {running}), 0),
       coalesce(sum(l.n) FILTER (WHERE l.status = {retry_scheduled}), 0),
       coalesce((SELECT n FROM dead d WHERE d.queue_name = q.name), 0),
       coalesce((SELECT sum(n) FROM recent r WHERE r.queue_name = q.name AND r.status = {completed}), 0),
       coalesce((SELECT sum(n) FROM recent r WHERE r.queue_name = q.name AND r.status NOT IN ({completed}, {throttled})), 0),
       q.served_at > now() - interval '30 seconds',
       q.paused_at IS NOT NULL, q.flow_keyed,
       (SELECT count(*) FROM jobhost.paused_keys k WHERE k.queue_name = q.name),
       coalesce((SELECT sum(n) FROM recent r WHERE r.queue_name = q.name AND r.status = {throttled}), 0)
  FROM jobhost.job_queues q LEFT JOIN live l ON l.queue_name = q.name
 GROUP BY q.name, q.served_at, q.paused_at, q.flow_keyed
 ORDER BY q.name)sql");

// The keys of a queue with the most jobs not yet started (waiting in
// PostgreSQL or in Redis), with their running jobs and whether each is paused.
// Counts the queue's live rows: an operator's question, not a hot path.
const std::string kQueueKeysSql = state_sql(R"sql(
WITH k AS (
  SELECT coalesce(flow_key, '') AS key,
         count(*) FILTER (WHERE status <> {running}) AS waiting,
         count(*) FILTER (WHERE status = {running}) AS running
    FROM jobhost.jobs
   WHERE queue_name = $1 AND status IN ({live})
   GROUP BY 1
)
SELECT k.key, k.waiting, k.running, p.paused_at IS NOT NULL
  FROM k LEFT JOIN jobhost.paused_keys p ON p.queue_name = $1 AND p.flow_key = k.key
UNION ALL
SELECT p.flow_key, 0, 0, true FROM jobhost.paused_keys p
 WHERE p.queue_name = $1 AND NOT EXISTS (SELECT 1 FROM k WHERE k.key = p.flow_key)
 ORDER BY 2 DESC, 3 DESC, 1
 LIMIT $2)sql");

const std::string kDlqSql = state_sql(R"sql(
SELECT id::text, queue_name, attempt_count, max_attempts,
       to_char(failed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       coalesce(last_error_message, ''), payload::text
  FROM jobhost.jobs WHERE status = {failed} AND ($1 = '' OR queue_name = $1)
 ORDER BY failed_at DESC LIMIT $2)sql");

// Exactly the job asked for (the seeds' replay reset another one). A member
// of a batch leaves its failed count; a finished batch is reopened.
const std::string kReplaySql = state_sql(R"sql(
WITH r AS (
  UPDATE jobhost.jobs SET status = {queued}, attempt_count = 0, run_at = now(),
         failed_at = NULL, cancel_requested_at = NULL, updated_at = now()
   WHERE status = {failed} AND (($1 <> '' AND id = NULLIF($1, '')::uuid) OR
                               ($1 = '' AND queue_name = $2))
  RETURNING id, batch_id, {failed} AS old_status, status AS new_status
), batch_tally AS ({batch_tally}), batch_reopen AS ({batch_reopen})
SELECT count(*) FROM r)sql",
                                         {{"batch_tally", batches::tally_cte("r")},
                                          {"batch_reopen", batches::reopen_cte("r")}});

// Not started: cancelled now. An id still in Redis is dropped by the fetcher,
// whose lease only takes jobs in status migrated_to_redis.
const std::string kCancelWaitingSql = state_sql(R"sql(
WITH c AS (
  UPDATE jobhost.jobs SET status = {cancelled}, cancel_requested_at = now(), updated_at = now(),
         last_error_message = 'cancelled before it started'
   WHERE id = $1::uuid AND status IN ({queued}, {retry_scheduled}, {migrated_to_redis})
  -- old_status: one of the live states (the tally tells only live from terminal)
  RETURNING id, batch_id, {queued} AS old_status, status AS new_status
), batch_tally AS ({batch_tally})
SELECT id, {batches_closed} FROM c)sql",
                                                {{"batch_tally", batches::tally_cte("c")},
                                                 {"batches_closed", batches::closed_touched_sql()}});
const std::string kCancelRunningSql = state_sql(R"sql(
UPDATE jobhost.jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
 WHERE id = $1::uuid AND status = {running}
RETURNING id)sql");

// Attempts per minute of the last $1 minutes, from jobhost.attempt_counts
// (sql/020: a few rows per minute and queue) laid on the minutes. Counting
// job_logs itself took about 1 µs a row: 14 s for 15 minutes of a 17,000
// jobs/s drain, on every poll of the dashboard's chart.
const std::string kThroughputSql = state_sql(R"sql(
WITH per AS (
  SELECT minute AS m,
         sum(n) FILTER (WHERE status = {completed}) AS completed,
         sum(n) FILTER (WHERE status = {failed}) AS failed,
         sum(n) FILTER (WHERE status IN ({retry_scheduled}, {stalled})) AS retried,
         sum(n) FILTER (WHERE status = {cancelled}) AS cancelled
    FROM jobhost.attempt_counts
   WHERE minute >= date_trunc('minute', now()) - ($1 - 1) * interval '1 minute'
   GROUP BY 1
)
SELECT to_char(s.m AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"'),
       coalesce(p.completed, 0), coalesce(p.failed, 0), coalesce(p.retried, 0), coalesce(p.cancelled, 0)
  FROM generate_series(date_trunc('minute', now()) - ($1 - 1) * interval '1 minute',
                       date_trunc('minute', now()), interval '1 minute') AS s(m)
  LEFT JOIN per p ON p.m = s.m
 ORDER BY s.m)sql");

const std::string kFailuresSql = state_sql(R"sql(
SELECT l.job_id::text, j.queue_name, l.status, l.attempt_number, coalesce(l.log_message, ''),
       to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
  FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id
 WHERE l.status <> {completed}
 ORDER BY l.id DESC LIMIT $1)sql");

// A state's name as a JSON key: the API counts jobs by state under their names.
std::string key(JobState s) { return std::string(to_text(s)); }

nlohmann::json text_or_null(const pqxx::field& f) {
  return f.is_null() ? nlohmann::json(nullptr) : nlohmann::json(f.c_str());
}

}  // namespace

bool is_uuid(const std::string& t) {
  if (t.size() != 36) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? t[i] != '-' : !std::isxdigit(static_cast<unsigned char>(t[i]))) return false;
  }
  return true;
}

std::optional<nlohmann::json> job(pqxx::connection& conn, const std::string& id) {
  if (!is_uuid(id)) throw std::invalid_argument("id: not a UUID: " + id);
  pqxx::nontransaction tx(conn);
  const pqxx::result r = tx.exec_params(kJobSql, id);
  if (r.empty()) return std::nullopt;
  const pqxx::row row = r[0];
  return nlohmann::json{
      {"id", row[0].c_str()},
      {"type", row[1].c_str()},
      {"status", row[2].c_str()},
      {"priority", row[3].as<int>()},
      {"payload", nlohmann::json::parse(row[4].c_str())},
      {"attempts", row[5].as<int>()},
      {"max_attempts", row[6].as<int>()},
      {"run_at", text_or_null(row[7])},
      {"created_at", text_or_null(row[8])},
      {"started_at", text_or_null(row[9])},
      {"completed_at", text_or_null(row[10])},
      {"failed_at", text_or_null(row[11])},
      {"last_error", text_or_null(row[12])},
      {"worker_id", text_or_null(row[13])},
      {"lease_expires_at", text_or_null(row[14])},
      {"unique_key", text_or_null(row[15])},
      {"cancel_requested_at", text_or_null(row[16])},
      {"progress", row[17].is_null() ? nlohmann::json(nullptr) : nlohmann::json(row[17].as<double>())},
      {"flow_key", text_or_null(row[18])},
      {"batch_id", text_or_null(row[19])},
  };
}

nlohmann::json running(pqxx::connection& conn, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kRunningSql, limit)) {
    out.push_back({{"id", row[0].c_str()},
                   {"type", row[1].c_str()},
                   {"attempt", row[2].as<int>()},
                   {"max_attempts", row[3].as<int>()},
                   {"worker_id", row[4].c_str()},
                   {"started_at", text_or_null(row[5])},
                   {"progress", row[6].is_null() ? nlohmann::json(nullptr) : nlohmann::json(row[6].as<double>())}});
  }
  return out;
}

nlohmann::json queues(pqxx::connection& conn) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : exec_hot(tx, "jobhost_admin_queues", kQueuesSql.c_str())) {
    out.push_back({
        {"name", row[0].c_str()},
        {"waiting", {{"high", row[1].as<long long>()}, {"normal", row[2].as<long long>()},
                     {"low", row[3].as<long long>()}}},
        {key(JobState::kRunning), row[4].as<long long>()},
        {key(JobState::kRetryScheduled), row[5].as<long long>()},
        {key(JobState::kFailed), row[6].as<long long>()},
        {"last_minute",
         {{key(JobState::kCompleted), row[7].as<long long>()},
          {"failed_attempts", row[8].as<long long>()},
          {std::string(kThrottledLog), row[13].as<long long>()}}},
        {"served", !row[9].is_null() && row[9].as<bool>()},
        {"paused", row[10].as<bool>()},
        {"keyed", row[11].as<bool>()},
        {"paused_keys", row[12].as<long long>()},
    });
  }
  return out;
}

nlohmann::json queue_keys(pqxx::connection& conn, const std::string& queue, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kQueueKeysSql, queue, limit)) {
    out.push_back({{"key", row[0].c_str()},
                   {"waiting", row[1].as<long long>()},
                   {key(JobState::kRunning), row[2].as<long long>()},
                   {"paused", row[3].as<bool>()}});
  }
  return out;
}

nlohmann::json throughput(pqxx::connection& conn, int minutes) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kThroughputSql, minutes)) {
    out.push_back({{"minute", row[0].c_str()},
                   {key(JobState::kCompleted), row[1].as<long long>()},
                   {key(JobState::kFailed), row[2].as<long long>()},
                   {"retried", row[3].as<long long>()},
                   {key(JobState::kCancelled), row[4].as<long long>()}});
  }
  return out;
}

nlohmann::json recent_failures(pqxx::connection& conn, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kFailuresSql, limit)) {
    out.push_back({{"id", row[0].c_str()},
                   {"type", row[1].c_str()},
                   {"status", row[2].c_str()},
                   {"attempt", row[3].as<int>()},
                   {"error", row[4].c_str()},
                   {"at", row[5].c_str()}});
  }
  return out;
}

nlohmann::json dlq(pqxx::connection& conn, const std::string& queue, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kDlqSql, queue, limit)) {
    out.push_back({
        {"id", row[0].c_str()},
        {"type", row[1].c_str()},
        {"attempts", row[2].as<int>()},
        {"max_attempts", row[3].as<int>()},
        {"failed_at", text_or_null(row[4])},
        {"last_error", row[5].c_str()},
        {"payload", nlohmann::json::parse(row[6].c_str())},
    });
  }
  return out;
}

long replay(pqxx::connection& conn, const std::string& id, const std::string& queue) {
  if (id.empty() == queue.empty()) throw std::invalid_argument("give a job id or a queue (one of them)");
  if (!id.empty() && !is_uuid(id)) throw std::invalid_argument("id: not a UUID: " + id);
  pqxx::work tx(conn);
  const long n = tx.exec_params1(kReplaySql, id, queue)[0].as<long>();
  tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
  return n;
}

CancelResult cancel(pqxx::connection& conn, const std::string& id) {
  if (!is_uuid(id)) throw std::invalid_argument("id: not a UUID: " + id);
  pqxx::work tx(conn);
  CancelResult result = CancelResult::kFinished;
  std::optional<std::string> closed;  // its batch, which may have finished with it
  if (const pqxx::result c = tx.exec_params(kCancelWaitingSql, id); !c.empty()) {
    result = CancelResult::kCancelled;
    if (!c[0][1].is_null()) closed = c[0][1].c_str();
  } else if (!tx.exec_params(kCancelRunningSql, id).empty()) {
    result = CancelResult::kRequested;
  } else if (tx.exec_params("SELECT 1 FROM jobhost.jobs WHERE id = $1::uuid", id).empty()) {
    result = CancelResult::kNotFound;
  }
  tx.commit();
  if (closed) batches::finish(conn, *closed);
  return result;
}

}  // namespace jobhost::admin
