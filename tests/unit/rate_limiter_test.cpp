// rate_limiter_test.cpp: token buckets allow a burst, then the rate, and say
// how long to wait; the key map stays bounded.
#include "rate_limiter.hpp"

#include <catch2/catch.hpp>

using jobhost::RateLimiter;
using namespace std::chrono_literals;

TEST_CASE("rate limiter: a burst, then one request per 1/rate, with the wait for Retry-After") {
  RateLimiter limiter(2, 4);
  const auto t0 = RateLimiter::Clock::now();
  for (int i = 0; i < 4; ++i) CHECK(limiter.take("a", t0) == 0);
  CHECK(limiter.take("a", t0) == 1);          // half a second to the next token: rounded up
  CHECK(limiter.take("b", t0) == 0);          // another key has its own bucket
  CHECK(limiter.take("a", t0 + 500ms) == 0);  // 2 per second
  CHECK(limiter.take("a", t0 + 500ms) == 1);
  CHECK(limiter.take("a", t0 + 10s) == 0);  // refilled, but never above the burst
  for (int i = 0; i < 3; ++i) CHECK(limiter.take("a", t0 + 10s) == 0);
  CHECK(limiter.take("a", t0 + 10s) == 1);
}

TEST_CASE("rate limiter: a slow rate asks for a longer wait, and rate 0 is no limit") {
  RateLimiter slow(0.1, 1);
  const auto t0 = RateLimiter::Clock::now();
  CHECK(slow.take("a", t0) == 0);
  CHECK(slow.take("a", t0) == 10);
  RateLimiter off(0, 1);
  for (int i = 0; i < 1000; ++i) REQUIRE(off.take("a", t0) == 0);
}

TEST_CASE("rate limiter: keys are bounded, and idle ones are forgotten to make room") {
  RateLimiter limiter(1, 1, 3);
  const auto t0 = RateLimiter::Clock::now();
  CHECK(limiter.take("a", t0) == 0);
  CHECK(limiter.take("b", t0) == 0);
  CHECK(limiter.take("c", t0) == 0);
  CHECK(limiter.take("d", t0) == 1);  // all three still spent: no room
  CHECK(limiter.keys() == 3);
  CHECK(limiter.take("d", t0 + 2s) == 0);  // the others refilled: swept
  CHECK(limiter.keys() == 1);
}
