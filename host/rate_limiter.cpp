// rate_limiter.cpp: see rate_limiter.hpp.
#include "rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace jobhost {

RateLimiter::RateLimiter(double per_s, double burst, std::size_t max_keys)
    : per_s_(per_s), burst_(std::max(burst, 1.0)), max_keys_(max_keys) {}

double RateLimiter::refill(const Bucket& b, Clock::time_point now) const {
  const double elapsed = std::chrono::duration<double>(now - b.at).count();
  return std::min(burst_, b.tokens + std::max(0.0, elapsed) * per_s_);
}

// A full bucket says nothing a fresh one would not: forget it.
void RateLimiter::sweep(Clock::time_point now) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    it = refill(it->second, now) >= burst_ ? buckets_.erase(it) : std::next(it);
  }
}

long RateLimiter::take(const std::string& key, Clock::time_point now) {
  if (per_s_ <= 0) return 0;
  std::lock_guard lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) sweep(now);
    // Every key busy at once: newcomers wait rather than the map growing.
    if (buckets_.size() >= max_keys_) return 1;
    it = buckets_.emplace(key, Bucket{burst_, now}).first;
  }
  Bucket& b = it->second;
  b.tokens = refill(b, now);
  b.at = now;
  if (b.tokens >= 1) {
    b.tokens -= 1;
    return 0;
  }
  return std::max(1L, static_cast<long>(std::ceil((1 - b.tokens) / per_s_)));
}

std::size_t RateLimiter::keys() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

}  // namespace jobhost
