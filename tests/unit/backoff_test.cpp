// Retry delays: exponential, capped, jittered within [d/2, d].
#include <set>

#include <catch2/catch.hpp>

#include "backoff.hpp"

using jobhost::backoff_delay_ms;
using jobhost::RetryPolicy;

TEST_CASE("retry delays double per attempt within the equal-jitter window", "[backoff]") {
  std::mt19937_64 rng(42);
  const RetryPolicy p{5, 1000, 600000};
  for (int attempt = 1; attempt <= 8; ++attempt) {
    const int64_t d = 1000LL << (attempt - 1);
    for (int i = 0; i < 200; ++i) {
      const int64_t got = backoff_delay_ms(p, attempt, rng);
      REQUIRE(got >= d / 2);
      REQUIRE(got <= d);
    }
  }
}

TEST_CASE("retry delays never exceed max_ms, even for huge attempt numbers", "[backoff]") {
  std::mt19937_64 rng(7);
  const RetryPolicy p{100, 1000, 60000};
  for (int attempt : {7, 20, 64, 1000, 1 << 30}) {
    const int64_t got = backoff_delay_ms(p, attempt, rng);
    CHECK(got >= 30000);
    CHECK(got <= 60000);
  }
}

TEST_CASE("jitter spreads retries of simultaneous failures", "[backoff]") {
  std::mt19937_64 rng(1);
  const RetryPolicy p{5, 10000, 600000};
  std::set<int64_t> seen;
  for (int i = 0; i < 50; ++i) seen.insert(backoff_delay_ms(p, 1, rng));
  CHECK(seen.size() > 40);
}

TEST_CASE("a zero base retries at once", "[backoff]") {
  std::mt19937_64 rng(3);
  CHECK(backoff_delay_ms(RetryPolicy{3, 0, 1000}, 4, rng) == 0);
}
