// The C++ SDK's promises, checked through <jobhost/testing.hpp> with small
// plugin classes defined here (no host, no servers).
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <jobhost/testing.hpp>

using jobhost::sdk::EnqueueOptions;
using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::testing::Harness;

namespace {

struct WithRetry : jobhost::sdk::Plugin {
  explicit WithRetry(const jobhost::sdk::Settings&) {}
  static constexpr const char* kDefaultRetry = R"({"max_attempts": 9})";
  Result handle(Job&) override { return Result::ok(); }
};

struct WithoutRetry : jobhost::sdk::Plugin {
  explicit WithoutRetry(const jobhost::sdk::Settings&) {}
  Result handle(Job&) override { return Result::ok(); }
};

// Enqueues the follow-ups its payload lists, with every option.
struct FanOut : jobhost::sdk::Plugin {
  explicit FanOut(const jobhost::sdk::Settings&) {}
  Result handle(Job& job) override {
    for (const auto& f : job.payload()["follow"]) {
      EnqueueOptions o;
      o.priority = f.value("priority", -1);
      o.delay = std::chrono::milliseconds(f.value("delay_ms", 0));
      o.max_attempts = f.value("max_attempts", 0);
      o.unique_key = f.value("key", "");
      job.log_info("enqueued " + job.enqueue("child", {{"n", f.value("n", 0)}}, o));
    }
    return Result::ok();
  }
};

// Reads the payload from many threads at once while handle() runs.
struct Threads : jobhost::sdk::Plugin {
  explicit Threads(const jobhost::sdk::Settings&) {}
  Result handle(Job& job) override {
    std::vector<std::thread> ts;
    std::atomic<int> sum{0};
    for (int i = 0; i < 8; ++i) {
      ts.emplace_back([&] {
        sum += job.payload()["n"].get<int>();
        job.heartbeat(0.5);
      });
    }
    for (auto& t : ts) t.join();
    return sum == 8 * job.payload()["n"].get<int>() ? Result::ok() : Result::permanent("payload raced");
  }
};

struct Thrower : jobhost::sdk::Plugin {
  explicit Thrower(const jobhost::sdk::Settings& s) {
    if (s.has("refuse")) throw jobhost::sdk::SettingsError("settings.refuse: refused as asked");
  }
  Result handle(Job&) override { throw 42; }
};

}  // namespace

TEST_CASE("sdk: a plugin's kDefaultRetry member is its declared retry policy", "[sdk]") {
  CHECK(Harness::of<WithRetry>().default_retry_json() == R"({"max_attempts": 9})");
  CHECK(Harness::of<WithoutRetry>().default_retry_json().empty());
}

TEST_CASE("sdk: enqueue options reach the host, and a unique key returns the first id", "[sdk]") {
  auto h = Harness::of<FanOut>();
  const auto run = h.run({"parent", {{"follow",
                                      {{{"n", 1}},
                                       {{"n", 2}, {"priority", 0}, {"delay_ms", 250}, {"max_attempts", 4}, {"key", "k"}},
                                       {{"n", 3}, {"key", "k"}}}}}});
  REQUIRE(run.ok());
  REQUIRE(run.enqueued.size() == 3);
  CHECK_FALSE(run.enqueued[0].priority);
  CHECK(run.enqueued[0].max_attempts == 0);
  REQUIRE(run.enqueued[1].priority);
  CHECK(*run.enqueued[1].priority == 0);  // priority 0 is a priority, not "the default"
  CHECK(run.enqueued[1].delay_ms == 250);
  CHECK(run.enqueued[1].max_attempts == 4);
  CHECK(run.enqueued[1].unique_key == "k");
  CHECK(run.enqueued[2].id == run.enqueued[1].id);
  CHECK(run.enqueued[0].id != run.enqueued[1].id);
  CHECK(run.logged("enqueued " + run.enqueued[1].id));
}

TEST_CASE("sdk: a Job may be read from the handler's own threads", "[sdk]") {
  auto h = Harness::of<Threads>();
  for (int i = 0; i < 50; ++i) {
    const auto run = h.run({"t", {{"n", i}}});
    REQUIRE(run.ok());
    CHECK(run.heartbeats.size() == 8);
  }
}

TEST_CASE("sdk: exceptions never cross the boundary, whatever is thrown", "[sdk]") {
  auto h = Harness::of<Thrower>();
  const auto run = h.run({"x"});
  CHECK(run.retried());
  CHECK(run.error == "handler threw a non-standard exception");
  CHECK_THROWS_WITH(Harness::of<Thrower>({{"refuse", true}}), "settings.refuse: refused as asked");
  CHECK(h.validate("x", {{"a", 1}}).empty());
}
