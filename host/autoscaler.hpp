// autoscaler.hpp: per-plugin pool sizing inside one host (DESIGN §5).
//
// Once a second, for each pool with a `scaling:` block: the queue depth is the
// number of its jobs waiting in Redis (the lists its fetcher reads). Deeper
// than queue_depth_above → the scale-up signal is on (metric plugin_scale_up,
// for an external autoscaler that adds hosts) and the pool grows by a quarter
// of its range, unless memory use is above memory_percent_above. No work and
// no waiting jobs for idle_ms → it shrinks by the same step toward min.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "config.hpp"
#include "redis.hpp"
#include "service.hpp"
#include "worker_pool.hpp"

namespace jobhost {

// Percent of memory in use: the cgroup's usage against its limit when the
// process runs under one (a container), else the machine's (MemTotal minus
// MemAvailable). nullopt when neither can be read.
std::optional<double> memory_used_percent();

class Autoscaler : public Service {
 public:
  // `pools` returns the host's current pools (a reload may change them).
  Autoscaler(const Config& config, std::function<std::vector<std::shared_ptr<WorkerPool>>()> pools);
  // One decision per elastic pool (public for tests of the rule).
  void tick(Redis& redis, std::chrono::steady_clock::time_point now);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  std::string failure_context() const override { return "pool sizes held"; }
  long long depth(Redis& redis, const WorkerPool& pool) const;

  Config config_;
  std::function<std::vector<std::shared_ptr<WorkerPool>>()> pools_;
  std::map<std::string, std::chrono::steady_clock::time_point> busy_at_;  // last time each pool had work
  std::map<std::string, bool> memory_blocked_;                           // to log a block once
};

}  // namespace jobhost
