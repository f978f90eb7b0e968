// lease.hpp: taking, extending and returning leases on jobs in PostgreSQL.
//
// A lease is the pair (status 'running', attempt_count) plus a deadline. The
// attempt number doubles as the lease token: every later write for the
// attempt is guarded by it, so a worker whose lease expired and was re-granted
// cannot overwrite the newer attempt's outcome (invariant 2).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

namespace jobhost {

struct LeasedJob {
  std::string id;
  std::string type;
  std::string payload;
  int attempt = 0;
  int max_attempts = 0;
};

// Leases the given jobs that are still 'migrated_to_redis' (others were taken
// or reset meanwhile and are skipped), counting the attempt now (invariant 4).
std::vector<LeasedJob> lease_jobs(pqxx::connection& conn, const std::vector<std::string>& ids,
                                  const std::string& worker_id, int64_t duration_ms);

struct LeaseCheck {
  std::vector<std::string> lost;              // the lease is gone (reaped, or the job moved on)
  std::vector<std::string> cancel_requested;  // still held, but an operator cancelled the job
};

// Extends the leases still held, and reports which are gone and which jobs
// were cancelled meanwhile (their handlers should be asked to stop).
LeaseCheck extend_leases(pqxx::connection& conn, const std::vector<std::pair<std::string, int>>& held,
                         int64_t duration_ms);

}  // namespace jobhost
