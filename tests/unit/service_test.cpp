// The service base (host/service.hpp): one log line per failure streak, one
// when the loop works again, a doubling back-off with a cap, and stopping.
#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "service.hpp"

using namespace jobhost;
using namespace std::chrono_literals;

namespace {

// Captures what the default logger writes while it lives.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    sink->set_pattern("%l %v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
    spdlog::set_level(spdlog::level::info);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }
  size_t count(const std::string& what) const {
    const std::string t = text();
    size_t n = 0;
    for (size_t at = t.find(what); at != std::string::npos; at = t.find(what, at + 1)) ++n;
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// Fails the passes listed as true in `script` (and every pass after it),
// succeeds the others, and asks `stop` to stop after the script's last pass.
class Scripted : public Service {
 public:
  Scripted(std::vector<bool> script, std::stop_source& stop, std::chrono::milliseconds backoff = 1ms)
      : Service({.name = "scripted",
                 .postgres_url = {},
                 .redis_url = {},
                 .first_pass_after = 0ms,
                 .backoff = backoff,
                 .max_backoff = backoff * 4}),
        script_(std::move(script)),
        stop_(stop) {}
  std::atomic<size_t> passes = 0;

 private:
  std::chrono::milliseconds run_once(std::stop_token) override {
    const size_t n = passes++;
    if (n + 1 >= script_.size()) stop_.request_stop();
    if (n >= script_.size() || script_[n]) throw std::runtime_error("boom " + std::to_string(n));
    return 0ms;
  }
  std::string failure_context() const override { return "3 things not done"; }

  std::vector<bool> script_;
  std::stop_source& stop_;
};

}  // namespace

TEST_CASE("a failing loop logs once per streak, and once with the count when it works again", "[service]") {
  LogCapture log;
  std::stop_source stop;
  // Two streaks: four failures, a success, two failures, a success.
  Scripted s({true, true, true, true, false, true, true, false}, stop);
  s.run(stop.get_token());
  INFO(log.text());
  CHECK(s.passes == 8);
  CHECK(log.count("scripted: 3 things not done: boom 0; retrying with back-off up to 4 ms") == 1);
  CHECK(log.count("scripted: 3 things not done: boom 5; retrying") == 1);
  CHECK(log.count("retrying") == 2);
  CHECK(log.count("scripted: working again after 4 failed passes in") == 1);
  CHECK(log.count("scripted: working again after 2 failed passes in") == 1);
  CHECK(log.count("working again") == 2);
}

TEST_CASE("the back-off doubles from its first pause and stops at its cap", "[service]") {
  Service::Options o{.name = "x",
                     .postgres_url = {},
                     .redis_url = {},
                     .first_pass_after = 0ms,
                     .backoff = 200ms,
                     .max_backoff = 2000ms};
  CHECK(backoff_after(1, o) == 200ms);
  CHECK(backoff_after(2, o) == 400ms);
  CHECK(backoff_after(4, o) == 1600ms);
  CHECK(backoff_after(5, o) == 2000ms);
  CHECK(backoff_after(1000, o) == 2000ms);
  o.max_backoff = 100ms;  // a cap below the first pause: the first pause throughout
  CHECK(backoff_after(3, o) == 200ms);
}

TEST_CASE("a stop request cuts a service's back-off short", "[service]") {
  std::stop_source unused;
  Scripted failing({true}, unused, 60s);  // after its failure it would pause a minute
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::jthread t([&](std::stop_token st) { failing.run(st); });
    while (failing.passes == 0) std::this_thread::sleep_for(1ms);
  }  // request_stop and join
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  CHECK(failing.passes == 1);
}
