// flow_runtime.hpp: what flow control needs at run time on one host: its
// Redis connections for slots and limiters, and the limiters: section as of
// the last (re)load.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "flow.hpp"
#include "redis.hpp"

namespace jobhost {

class FlowRuntime {
 public:
  // Every worker may give a slot back at the same moment: keep a connection
  // for each rather than reconnect (measured: 16 kept for 64 workers cost
  // two thirds of a limited queue's drain in reconnects).
  static constexpr size_t kMaxIdleConnections = 1024;

  FlowRuntime(const std::string& redis_url, std::string prefix, std::vector<LimiterConfig> limiters)
      : redis_(redis_url, kMaxIdleConnections), prefix_(std::move(prefix)),
        limiters_(std::make_shared<const std::vector<LimiterConfig>>(std::move(limiters))) {}

  RedisPool& redis() { return redis_; }
  const std::string& prefix() const { return prefix_; }

  std::shared_ptr<const std::vector<LimiterConfig>> limiters() const {
    std::lock_guard lock(mu_);
    return limiters_;
  }
  // Hold-offs (job.hold_off) of every host, as this host last read them:
  // an acquire of a name no limiter governs asks this copy, not Redis. The
  // copy is read again (by one thread, the others waiting for it) when it
  // is older than kHoldsRefresh, so another host's hold-off applies here
  // within that; this host's own at once.
  static constexpr std::chrono::milliseconds kHoldsRefresh{100};
  // How long `name` is held back (ms), 0 when it is not; -1 when Redis could
  // not be read lately (the caller then waits as for any Redis failure).
  long long held_for(const std::string& name);
  // Holds `name` back for `ms`: in Redis for every host, and in this copy.
  void hold(const std::string& name, long long ms);

  // SIGHUP: acquires from now on see the new limits.
  void set_limiters(std::vector<LimiterConfig> limiters) {
    auto next = std::make_shared<const std::vector<LimiterConfig>>(std::move(limiters));
    std::lock_guard lock(mu_);
    limiters_ = std::move(next);
  }

 private:
  RedisPool redis_;
  std::string prefix_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<LimiterConfig>> limiters_;

  using Clock = std::chrono::steady_clock;
  std::mutex holds_mu_;
  std::unordered_map<std::string, Clock::time_point> holds_;  // name -> end of its hold
  Clock::time_point holds_read_at_{};                         // the last read (or attempt)
  bool holds_reading_ = false;                                // a thread reads now
  std::condition_variable holds_read_;                        // ... and is done
  bool holds_failed_ = false;                                 // the last read failed
};

}  // namespace jobhost
