// lease_keeper.hpp: lease keeping, the host's housekeeping loop. Every 100 ms it
// enforces each plugin's timeout_ms (WorkerPool::supervise); every
// heartbeat_ms it extends the leases of every attempt the host holds, and asks
// the handlers of attempts whose lease was lost (reaped) or whose job was
// cancelled to stop. Every QueueRegistry::kRefreshPeriod it refreshes the
// queue registration on the same connection. After a lease statement failed
// without an answer (WorkerPool::lease_answer_lost) it also gives back the
// jobs that statement may have leased after all.
#pragma once

#include <chrono>
#include <map>
#include <string>

#include "completer.hpp"
#include "config.hpp"
#include "flow_runtime.hpp"
#include "lease.hpp"
#include "pool_set.hpp"
#include "queue_registry.hpp"
#include "service.hpp"

namespace jobhost {

class LeaseKeeper : public Service {
 public:
  LeaseKeeper(const Config& config, const PoolSet& pools, const QueueRegistry& registry, FlowRuntime& flow,
              Completer& completer);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  void extend_slots_of(const std::vector<HeldLease>& held);
  // A lease whose answer was lost leaves its jobs running under the pool's
  // worker id with no attempt for them. Such a job, seen again with the same
  // attempt and the same lease deadline more than a heartbeat later (so not
  // an attempt passing from a worker to the completer, nor a lease on its
  // way to a worker, nor one that another process extends: a second host
  // given the same host.id), goes back to its queue with its attempt
  // returned, as a job leased but never started does. Without this it would
  // wait for its lease to expire and be charged an attempt it never ran
  // ('stalled').
  void give_back_unanswered(pqxx::connection& conn, WorkerPool& pool);

  const PoolSet& pools_;
  const QueueRegistry& registry_;
  FlowRuntime& flow_;
  Completer& completer_;
  std::string host_id_;
  // Per pool, by job id: the jobs give_back_unanswered has seen, as first
  // seen. It looks every kUnansweredLeaseAge while a pool has a lost answer
  // or a job seen.
  struct Seen {
    RunningLease lease;
    std::chrono::steady_clock::time_point at;
  };
  std::map<std::string, std::map<std::string, Seen>> unanswered_;
  std::string key_prefix_;
  std::chrono::milliseconds heartbeat_;
  int64_t lease_ms_;
  std::chrono::steady_clock::time_point next_heartbeat_;
  std::chrono::steady_clock::time_point next_register_;
  std::chrono::steady_clock::time_point next_unanswered_;
};

}  // namespace jobhost
