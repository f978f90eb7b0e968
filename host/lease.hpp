// lease.hpp: taking, extending and returning leases on jobs in PostgreSQL.
//
// A lease is the pair (status 'running', attempt_count) plus a deadline. The
// attempt number doubles as the lease token: every later write for the
// attempt is guarded by it, so a worker whose lease expired and was re-granted
// cannot overwrite the newer attempt's outcome (invariant 2).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
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
  int priority = 100;
  int64_t created_at_ms = 0;  // ms since the Unix epoch
  std::string flow_key;       // "" none
  // Set when the job holds a concurrency slot in Redis (flow_dispatch.hpp):
  // the key the slot was taken under, for giving it back.
  std::optional<std::string> slot_key;
};

// Leases the given jobs that are still 'migrated_to_redis' (others were taken
// or reset meanwhile and are skipped), counting the attempt now (invariant 4).
std::vector<LeasedJob> lease_jobs(pqxx::connection& conn, const std::vector<std::string>& ids,
                                  const std::string& worker_id, int64_t duration_ms);

// The columns every lease statement returns (RETURNING {leased} on the
// jobs row j), and the rows of such a statement as leased jobs; observes
// job_start_delay_seconds for each, since a job is leased only for a free
// worker. lease_set_sql is the SET list of a lease, given the statement's
// parameters that hold the worker id and the lease's length in ms. Shared by
// lease_jobs and the migrator's direct lease (migrator.hpp).
extern const char* const kLeasedColumns;
std::string lease_set_sql(std::string_view worker_id_param, std::string_view lease_ms_param);
std::vector<LeasedJob> leased_jobs(const pqxx::result& r);

struct LeaseCheck {
  std::vector<std::string> lost;              // the lease is gone (reaped, or the job moved on)
  std::vector<std::string> cancel_requested;  // still held, but an operator cancelled the job
};

// A lease this host holds, with the progress its handler last reported.
struct HeldLease {
  std::string id;
  int attempt = 0;
  double progress = -1.0;  // < 0: none reported
  std::string queue;
  std::optional<std::string> slot_key;  // LeasedJob::slot_key
};

// Extends the leases still held, writes the progress reported, and reports
// which are gone and which jobs were cancelled meanwhile (their handlers
// should be asked to stop).
LeaseCheck extend_leases(pqxx::connection& conn, const std::vector<HeldLease>& held, int64_t duration_ms);

// How long after its lease a job running under a worker id that has no
// attempt for it counts as a lease whose answer was lost: longer than an
// answer takes to reach a worker.
constexpr std::chrono::milliseconds kUnansweredLeaseAge{2000};

// A job running under a worker id, as unanswered_leases finds it.
struct RunningLease {
  std::string id;
  int attempt = 0;
  std::string expires;  // lease_expires_at, as text: it changes when anyone extends the lease
};

// Jobs running under `worker_id` since kUnansweredLeaseAge or longer that
// are none of `attempts` (the ids of the attempts the worker's pool and the
// completer have).
std::vector<RunningLease> unanswered_leases(pqxx::connection& conn, const std::string& worker_id,
                                            const std::unordered_set<std::string>& attempts);

}  // namespace jobhost
