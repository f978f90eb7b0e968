// reconciler.hpp: finds jobs PostgreSQL believes are in Redis but Redis lost
// (Redis restarted empty, or a fetcher died between popping and leasing) and
// queues them again, so the migrator pushes them anew (invariant 3).
//
// A job is a candidate once it has been 'migrated_to_redis' for longer than
// stale_after_ms; it is requeued when it is no longer a member of its queue's
// Redis set. The requeue is guarded by status, so a worker that leases the job
// at the same moment wins or loses cleanly: never both.
#pragma once

#include <pqxx/pqxx>

#include "config.hpp"
#include "redis.hpp"
#include "service.hpp"

namespace jobhost {

// Every host.reconciler.interval_ms.
class Reconciler : public Service {
 public:
  explicit Reconciler(const Config& config);
  // One pass; returns how many jobs were queued again.
  size_t pass(pqxx::connection& conn, Redis& redis);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;

  Config config_;
};

}  // namespace jobhost
