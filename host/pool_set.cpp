// pool_set.cpp: snapshots of the pools, and the drain of retired ones.
#include "pool_set.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "worker_pool.hpp"

namespace jobhost {

PoolSet::Pools PoolSet::active() const {
  std::lock_guard lock(mu_);
  return active_;
}

PoolSet::Pools PoolSet::all() const {
  std::lock_guard lock(mu_);
  auto out = active_;
  out.insert(out.end(), retiring_.begin(), retiring_.end());
  return out;
}

void PoolSet::add(std::shared_ptr<WorkerPool> pool) {
  std::lock_guard lock(mu_);
  active_.push_back(std::move(pool));
}

void PoolSet::replace(Pools next, const Pools& retire) {
  {
    std::lock_guard lock(mu_);
    active_ = std::move(next);
    retiring_.insert(retiring_.end(), retire.begin(), retire.end());
  }
  for (const auto& pool : retire) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(pool->plugin_config().timeout_ms) +
                          std::chrono::seconds(1);
    drainers_.emplace_back([this, pool, deadline] {
      pool->drain(deadline, "the plugin was replaced or removed by a reload before the attempt finished");
      spdlog::info("plugin {} {}: drained after the reload; unloading it", pool->name(), pool->plugin().info().version);
      std::lock_guard lock(mu_);
      retiring_.erase(std::remove(retiring_.begin(), retiring_.end(), pool), retiring_.end());
    });
  }
}

void PoolSet::join_drainers() {
  for (auto& t : drainers_) {
    if (t.joinable()) t.join();
  }
}

}  // namespace jobhost
