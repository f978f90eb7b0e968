// pool_set.hpp: the worker pools of one host: the active ones, which fetch and
// run new jobs, and those a reload retired, which finish their running jobs on
// threads of their own and are then dropped (and their plugins unloaded).
//
// Thread-safe: readers (lease keeping, gauges, the API, the autoscaler) take
// snapshots. Only the host's main thread changes the set: add at start-up,
// replace on a reload, join_drainers at shutdown.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace jobhost {

class WorkerPool;

class PoolSet {
 public:
  using Pools = std::vector<std::shared_ptr<WorkerPool>>;

  // The pools that serve new jobs.
  Pools active() const;
  // Active and retiring: both hold leases to extend and handlers to watch.
  Pools all() const;

  // Start-up: one more active pool.
  void add(std::shared_ptr<WorkerPool> pool);
  // A reload: `next` becomes the active set; each of `retire` drains (until
  // its timeout_ms and a second more) on a thread of its own and is dropped
  // once drained.
  void replace(Pools next, const Pools& retire);
  // Shutdown: waits for the retiring pools' drains.
  void join_drainers();

 private:
  mutable std::mutex mu_;
  Pools active_;
  Pools retiring_;                     // replaced or removed, finishing their jobs
  std::vector<std::jthread> drainers_;  // one per retiring pool
};

}  // namespace jobhost
