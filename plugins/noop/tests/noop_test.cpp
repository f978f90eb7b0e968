// The noop plugin's handler, run in-process through <jobhost/testing.hpp>.
#include <catch2/catch.hpp>
#include <jobhost/testing.hpp>

extern "C" const jobhost_plugin* jobhost_plugin_entry(void);

using jobhost::sdk::testing::Harness;
using jobhost::sdk::testing::TestJob;

TEST_CASE("noop succeeds on an empty payload and reports nothing else", "[noop]") {
  Harness h(jobhost_plugin_entry());
  const auto run = h.run({"noop"});
  CHECK(run.ok());
  CHECK(run.error.empty());
  CHECK(run.heartbeats.empty());
  CHECK(run.enqueued.empty());
}

TEST_CASE("noop fails the attempts it is asked to, with the delay it is asked for", "[noop]") {
  Harness h(jobhost_plugin_entry());
  TestJob job{"noop", {{"fail_attempts", 2}, {"retry_after_ms", 1500}}};
  auto run = h.run(job);
  CHECK(run.retried());
  CHECK(run.error == "noop: failing attempt 1 as asked");
  REQUIRE(run.retry_after_ms);
  CHECK(*run.retry_after_ms == 1500);
  job.attempt = 3;
  run = h.run(job);
  CHECK(run.ok());
  CHECK_FALSE(run.retry_after_ms);
}

TEST_CASE("noop's permanent failure and thrown exception become the outcomes the host expects", "[noop]") {
  Harness h(jobhost_plugin_entry());
  const auto permanent = h.run({"noop", {{"permanent", true}}});
  CHECK(permanent.permanent());
  CHECK(permanent.error == "noop: permanent failure as asked");
  const auto thrown = h.run({"noop", {{"throw", true}}});
  CHECK(thrown.retried());
  CHECK(thrown.error == "noop: thrown as asked");
}

TEST_CASE("noop refuses payloads of the wrong type, naming the field", "[noop]") {
  Harness h(jobhost_plugin_entry());
  CHECK(h.validate("noop", {{"sleep_ms", -1}}) == "payload.sleep_ms: must be a non-negative integer");
  CHECK(h.validate("noop", {{"hang", "yes"}}) == "payload.hang: must be true or false");
  CHECK(h.validate("noop", {{"sleep_ms", 5}}).empty());
}

TEST_CASE("noop reports its progress while sleeping and stops when cancelled", "[noop]") {
  Harness h(jobhost_plugin_entry());
  const auto slept = h.run({"noop", {{"sleep_ms", 100}}});
  CHECK(slept.ok());
  REQUIRE(slept.heartbeats.size() >= 3);
  CHECK(slept.heartbeats.front() == Approx(0.0).margin(0.2));
  CHECK(slept.heartbeats.back() == 1.0);
  for (size_t i = 1; i < slept.heartbeats.size(); ++i) CHECK(slept.heartbeats[i] >= slept.heartbeats[i - 1]);

  h.cancel_after_heartbeats(2);
  const auto cancelled = h.run({"noop", {{"sleep_ms", 10000}}});
  CHECK(cancelled.retried());
  CHECK(cancelled.error == "noop: cancelled while sleeping");
  CHECK(cancelled.heartbeats.size() == 2);
}

TEST_CASE("noop takes the limiter it is asked to, and is throttled while the limiter is full", "[noop][flow]") {
  Harness h(jobhost_plugin_entry());
  const TestJob job{"noop", {{"acquire", "relay:test"}}};
  auto run = h.run(job);
  CHECK(run.ok());
  CHECK(run.acquired == std::vector<std::string>{"relay:test"});
  h.limit("relay:test", std::chrono::milliseconds(750));
  run = h.run(job);
  CHECK(run.throttled());
  REQUIRE(run.retry_after_ms);
  CHECK(*run.retry_after_ms == 750);
  CHECK(run.error == "noop: limiter relay:test is full");
  CHECK(run.acquired.empty());
  CHECK(h.validate("noop", {{"acquire", 3}}) == "payload.acquire: must be a limiter name");
}
