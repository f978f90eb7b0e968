// flow_runtime.hpp: what flow control needs at run time on one host: its
// Redis connections for slots and limiters, and the limiters: section as of
// the last (re)load.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flow.hpp"
#include "redis.hpp"

namespace jobhost {

class FlowRuntime {
 public:
  FlowRuntime(const std::string& redis_url, std::string prefix, std::vector<LimiterConfig> limiters)
      : redis_(redis_url, 16), prefix_(std::move(prefix)),
        limiters_(std::make_shared<const std::vector<LimiterConfig>>(std::move(limiters))) {}

  RedisPool& redis() { return redis_; }
  const std::string& prefix() const { return prefix_; }

  std::shared_ptr<const std::vector<LimiterConfig>> limiters() const {
    std::lock_guard lock(mu_);
    return limiters_;
  }
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
};

}  // namespace jobhost
