// rate_limiter.hpp: token buckets by key (a client address, an API token), for
// the admin API's request rate limits. Thread-safe; the number of keys is
// bounded, so a client cycling through addresses cannot grow it without end.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <string>
#include <unordered_map>

namespace jobhost {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // per_s = 0: no limit (take() always allows). burst: the bucket's size,
  // what a key that has been quiet may spend at once.
  RateLimiter(double per_s, double burst, std::size_t max_keys = 100000);

  // Spends one request of key's bucket. Allowed: 0. Refused: the whole seconds
  // to wait before one is allowed again (at least 1), for Retry-After.
  long take(const std::string& key, Clock::time_point now = Clock::now());

  std::size_t keys() const;

 private:
  struct Bucket {
    double tokens;
    Clock::time_point at;
  };
  double refill(const Bucket& b, Clock::time_point now) const;
  void sweep(Clock::time_point now);

  double per_s_, burst_;
  std::size_t max_keys_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace jobhost
