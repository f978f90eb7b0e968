// backoff.hpp: retry policy and the delay before the next attempt.
#pragma once

#include <cstdint>
#include <random>

namespace jobhost {

struct RetryPolicy {
  int max_attempts = 3;
  int64_t base_ms = 1000;
  int64_t max_ms = 600000;
};

// Delay before attempt `failed_attempt + 1`: exponential (base * 2^(n-1)),
// capped at max_ms, with "equal jitter": uniformly in [d/2, d], so a burst of
// failures does not retry in lock-step yet never retries much sooner than d.
int64_t backoff_delay_ms(const RetryPolicy& policy, int failed_attempt, std::mt19937_64& rng);

}  // namespace jobhost
