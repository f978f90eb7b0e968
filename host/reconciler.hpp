// reconciler.hpp: keeps Redis and PostgreSQL in agreement, both ways.
//
// Lost jobs: finds jobs PostgreSQL believes are in Redis but Redis lost (Redis
// restarted empty, or a fetcher died between popping and leasing) and queues
// them again, so the migrator pushes them anew (invariant 3). A job is a
// candidate once it has been 'migrated_to_redis' for longer than
// stale_after_ms; it is requeued when it is no longer a member of its queue's
// Redis set. The requeue is guarded by status, so a worker that leases the job
// at the same moment wins or loses cleanly: never both.
//
// Orphaned ids: removes from a queue's Redis lists and membership set the ids
// whose job is not 'migrated_to_redis' (deleted, dead-lettered and purged,
// cancelled while waiting, or put back after a push that half failed) and any
// value that is not a job id at all. Each pass reads one chunk of every
// queue's set (SSCAN) and of each of its lists (LRANGE), asks PostgreSQL about
// them in one statement, and continues where it stopped at the next pass, so a
// pass costs a few round trips however long the lists are. An id that leaves
// Redis and is pushed again between the check and the removal (a retry with no
// delay, within milliseconds) can be removed while live; its job is then one
// that Redis lost, and the first half requeues it: never lost.
#pragma once

#include <array>
#include <map>
#include <string>

#include <pqxx/pqxx>

#include "config.hpp"
#include "redis.hpp"
#include "scan_floor.hpp"
#include "service.hpp"

namespace jobhost {

// Every host.reconciler.interval_ms: a pass, then a sweep step. A pass scans
// jobs_migrated_idx from a floor (scan_floor.hpp): the oldest candidate the
// last pass found, or its cut-off less a second when it found none; a full
// pass at least every kFullEvery.
class Reconciler : public Service {
 public:
  static constexpr size_t kSweepChunk = 250;
  static constexpr std::chrono::milliseconds kFullEvery{60000};

  // `sweep_chunk`: ids read per key and pass by the orphan sweep;
  // `full_every`: the longest time between full passes.
  explicit Reconciler(const Config& config, size_t sweep_chunk = kSweepChunk,
                      std::chrono::milliseconds full_every = kFullEvery);
  // Lost jobs; returns how many were queued again.
  size_t pass(pqxx::connection& conn, Redis& redis);
  // One step of the orphan sweep over every queue; returns the Redis entries removed.
  size_t sweep(pqxx::connection& conn, Redis& redis);

 private:
  // Where the sweep of one queue continues.
  struct SweepPosition {
    std::string set_cursor = "0";
    std::array<long long, 3> list_start{};  // by band
  };

  std::chrono::milliseconds run_once(std::stop_token stop) override;
  size_t sweep_queue(pqxx::connection& conn, Redis& redis, const std::string& queue);

  Config config_;
  size_t sweep_chunk_;
  std::map<std::string, SweepPosition> sweep_at_;
  ScanFloor floor_;
};

}  // namespace jobhost
