// lease_keeper.hpp: lease keeping, the host's housekeeping loop. Every 100 ms it
// enforces each plugin's timeout_ms (WorkerPool::supervise); every
// heartbeat_ms it extends the leases of every attempt the host holds, and asks
// the handlers of attempts whose lease was lost (reaped) or whose job was
// cancelled to stop. Every QueueRegistry::kRefreshPeriod it refreshes the
// queue registration on the same connection.
#pragma once

#include <stop_token>

#include "config.hpp"
#include "pool_set.hpp"
#include "queue_registry.hpp"

namespace jobhost {

class LeaseKeeper {
 public:
  LeaseKeeper(const Config& config, const PoolSet& pools, const QueueRegistry& registry)
      : config_(config), pools_(pools), registry_(registry) {}
  void run(std::stop_token stop);

 private:
  Config config_;
  const PoolSet& pools_;
  const QueueRegistry& registry_;
};

}  // namespace jobhost
