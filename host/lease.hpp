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

// Extends the leases still held; returns the ids whose lease is gone.
std::vector<std::string> extend_leases(pqxx::connection& conn,
                                       const std::vector<std::pair<std::string, int>>& held,
                                       int64_t duration_ms);

}  // namespace jobhost
