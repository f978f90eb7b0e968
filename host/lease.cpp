// lease.cpp: the lease statements, one round trip per batch.
#include "lease.hpp"

#include <algorithm>
#include <unordered_set>

#include "job_state.hpp"
#include "metrics.hpp"
#include "pg.hpp"

namespace jobhost {

const char* const kLeasedColumns = R"sql(j.id::text, j.queue_name, j.payload::text, j.attempt_count, j.max_attempts, j.priority,
          (extract(epoch FROM j.created_at) * 1000)::bigint, coalesce(j.flow_key, ''),
          extract(epoch FROM now() - greatest(j.run_at, j.created_at))::float8)sql";

std::string lease_set_sql(std::string_view worker_id_param, std::string_view lease_ms_param) {
  return state_sql(R"sql(status = {running}, attempt_count = j.attempt_count + 1, started_at = now(), progress = NULL,
       updated_at = now(), worker_id = {worker_id},
       lease_expires_at = now() + {lease_ms} * interval '1 millisecond')sql",
                   {{"worker_id", std::string(worker_id_param)}, {"lease_ms", std::string(lease_ms_param)}});
}

namespace {

// Statements that act on a batch of known ids join them (rather than id =
// ANY) and write the status guard as `status || ''`, which no partial index's
// predicate matches: the only plan left is one primary-key lookup per id.
// Otherwise, while statistics lag behind a burst of inserts, the planner
// believes the partial index of a state holds a handful of rows and scans all
// of it (measured: 13 ms instead of 0.3 ms per 64-job lease at 100k queued).
const std::string kLeaseSql = state_sql(R"sql(
UPDATE jobhost.jobs j
   SET {lease_set}
  FROM unnest($1::uuid[]) AS t(id), {async_commit}
 WHERE j.id = t.id AND j.status || '' = {migrated_to_redis}
RETURNING {leased})sql",
                                           {{"async_commit", kAsyncCommitFrom}, {"leased", kLeasedColumns}, {"lease_set", lease_set_sql("$2", "$3")}});

const std::string kExtendSql = state_sql(R"sql(
UPDATE jobhost.jobs j
   SET lease_expires_at = now() + $3 * interval '1 millisecond',
       progress = CASE WHEN h.progress >= 0 THEN h.progress ELSE j.progress END
  FROM unnest($1::uuid[], $2::int[], $4::real[]) AS h(id, attempt, progress), {async_commit}
 WHERE j.id = h.id AND j.attempt_count = h.attempt AND j.status || '' = {running}
RETURNING j.id::text, j.cancel_requested_at IS NOT NULL)sql",
                                            {{"async_commit", kAsyncCommitFrom}});

const std::string kUnansweredSql = state_sql(R"sql(
SELECT id::text, attempt_count, lease_expires_at::text FROM jobhost.jobs
 WHERE status = {running} AND worker_id = $1 AND started_at < now() - $2 * interval '1 millisecond'
   AND NOT (id = ANY($3::uuid[])))sql");

}  // namespace

std::vector<RunningLease> unanswered_leases(pqxx::connection& conn, const std::string& worker_id,
                                            const std::unordered_set<std::string>& attempts) {
  PgArray ids;
  for (const auto& id : attempts) ids.add(id);
  pqxx::nontransaction tx(conn);
  std::vector<RunningLease> out;
  for (const auto& row : tx.exec_params(kUnansweredSql, worker_id, kUnansweredLeaseAge.count(), ids.str())) {
    out.push_back({row[0].c_str(), row[1].as<int>(), row[2].is_null() ? "" : row[2].c_str()});
  }
  return out;
}

std::vector<LeasedJob> lease_jobs(pqxx::connection& conn, const std::vector<std::string>& ids,
                                  const std::string& worker_id, int64_t duration_ms) {
  std::vector<LeasedJob> out;
  if (ids.empty()) return out;
  PgArray arr;
  for (const auto& id : ids) arr.add(id);
  // One statement, so autocommit is its transaction: one round trip, not three.
  pqxx::nontransaction tx(conn);
  return leased_jobs(exec_hot(tx, "jobhost_lease", kLeaseSql.c_str(), arr.str(), worker_id, duration_ms));
}

std::vector<LeasedJob> leased_jobs(const pqxx::result& r) {
  std::vector<LeasedJob> out;
  out.reserve(r.size());
  for (const auto& row : r) {
    out.push_back({row[0].c_str(), row[1].c_str(), row[2].c_str(), row[3].as<int>(), row[4].as<int>(),
                   row[5].as<int>(), row[6].as<int64_t>(), row[7].c_str(), std::nullopt});
    // Jobs are leased only for workers that are free: the lease is the start.
    Metrics::global().observe("job_start_delay_seconds", {{"queue", out.back().type}},
                              std::max(0.0, row[8].as<double>()));
  }
  return out;
}

LeaseCheck extend_leases(pqxx::connection& conn, const std::vector<HeldLease>& held, int64_t duration_ms) {
  LeaseCheck out;
  if (held.empty()) return out;
  PgArray ids;
  PgArray attempts;
  PgArray progress;
  for (const auto& h : held) {
    ids.add(h.id);
    attempts.add(h.attempt);
    progress.add(h.progress >= 0 ? std::to_string(std::min(h.progress, 1.0)) : std::string("-1"));
  }
  pqxx::nontransaction tx(conn);
  const pqxx::result r =
      exec_hot(tx, "jobhost_extend", kExtendSql.c_str(), ids.str(), attempts.str(), duration_ms, progress.str());
  std::unordered_set<std::string> kept;
  for (const auto& row : r) {
    kept.insert(row[0].c_str());
    if (row[1].as<bool>()) out.cancel_requested.push_back(row[0].c_str());
  }
  for (const auto& h : held) {
    if (!kept.count(h.id)) out.lost.push_back(h.id);
  }
  return out;
}

}  // namespace jobhost
