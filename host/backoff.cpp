// backoff.cpp: exponential backoff with jitter.
#include "backoff.hpp"

#include <algorithm>

namespace jobhost {

int64_t backoff_delay_ms(const RetryPolicy& policy, int failed_attempt, std::mt19937_64& rng) {
  const int64_t cap = std::max<int64_t>(policy.max_ms, 0);
  int64_t delay = std::max<int64_t>(policy.base_ms, 0);
  // Double without overflowing: stop once the cap is reached.
  for (int i = 1; i < failed_attempt && delay < cap; ++i) delay = delay > cap / 2 ? cap : delay * 2;
  delay = std::min(delay, cap);
  if (delay <= 1) return delay;
  std::uniform_int_distribution<int64_t> jitter(delay / 2, delay);
  return jitter(rng);
}

}  // namespace jobhost
