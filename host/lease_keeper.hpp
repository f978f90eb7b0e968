// lease_keeper.hpp: lease keeping, the host's housekeeping loop. Every 100 ms it
// enforces each plugin's timeout_ms (WorkerPool::supervise); every
// heartbeat_ms it extends the leases of every attempt the host holds, and asks
// the handlers of attempts whose lease was lost (reaped) or whose job was
// cancelled to stop. Every QueueRegistry::kRefreshPeriod it refreshes the
// queue registration on the same connection.
#pragma once

#include <chrono>

#include "config.hpp"
#include "flow_runtime.hpp"
#include "lease.hpp"
#include "pool_set.hpp"
#include "queue_registry.hpp"
#include "service.hpp"

namespace jobhost {

class LeaseKeeper : public Service {
 public:
  LeaseKeeper(const Config& config, const PoolSet& pools, const QueueRegistry& registry, FlowRuntime& flow);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  void extend_slots_of(const std::vector<HeldLease>& held);

  const PoolSet& pools_;
  const QueueRegistry& registry_;
  FlowRuntime& flow_;
  std::string key_prefix_;
  std::chrono::milliseconds heartbeat_;
  int64_t lease_ms_;
  std::chrono::steady_clock::time_point next_heartbeat_;
  std::chrono::steady_clock::time_point next_register_;
};

}  // namespace jobhost
