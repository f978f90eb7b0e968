// noop: the job type "noop", for tests and benchmarks. Its payload drives it:
//   {}                       succeed at once
//   {"sleep_ms": N}          sleep N ms (waking early if cancelled), reporting its
//                            progress as it goes, then succeed
//   {"fail_attempts": N}     retryable failure while attempt <= N, then succeed
//   {"permanent": true}      permanent failure (dead-lettered at once)
//   {"throw": true}          throw an exception (a retryable failure)
//   {"crash": true}          abort the whole host process (a poison pill)
//   {"hang": true}           never return, ignoring cancellation
//   {"retry_after_ms": N}    with fail_attempts: ask for that retry delay
//   {"acquire": "name"}      take the limiter first (limiters: in the config);
//                            when it is full, come back later (Result::throttled)
//   {"hold_off": {"name": N, "ms": M}}
//                            hold the limiter N back for M ms on every host
//                            (job.hold_off), then go on
//   {"follow_up": {"type": T, "payload": {...}, "batch_id": B, "flow_key": K}}
//                            enqueue that job through the SDK (batch_id and
//                            flow_key optional, ABI 1.3) before succeeding
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include <jobhost/plugin.hpp>

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;

class Noop : public jobhost::sdk::Plugin {
 public:
  explicit Noop(const jobhost::sdk::Settings&) {}

  std::string validate(std::string_view, const nlohmann::json& p) override {
    for (const char* key : {"sleep_ms", "fail_attempts", "retry_after_ms"}) {
      if (p.contains(key) && !(p[key].is_number_integer() && p[key].get<long long>() >= 0)) {
        return std::string("payload.") + key + ": must be a non-negative integer";
      }
    }
    if (p.contains("acquire") && !(p["acquire"].is_string() && !p["acquire"].get<std::string>().empty())) {
      return "payload.acquire: must be a limiter name";
    }
    if (p.contains("hold_off")) {
      const nlohmann::json& h = p["hold_off"];
      if (!h.is_object() || !h.contains("name") || !h["name"].is_string() || !h.contains("ms") ||
          !h["ms"].is_number_integer() || h["ms"].get<long long>() <= 0) {
        return "payload.hold_off: must be {name: a limiter name, ms: a positive integer}";
      }
    }
    if (p.contains("follow_up")) {
      const nlohmann::json& f = p["follow_up"];
      if (!f.is_object() || !f.contains("type") || !f["type"].is_string()) {
        return "payload.follow_up: must be {type, payload?, batch_id?, flow_key?}";
      }
    }
    for (const char* key : {"permanent", "throw", "crash", "hang"}) {
      if (p.contains(key) && !p[key].is_boolean()) {
        return std::string("payload.") + key + ": must be true or false";
      }
    }
    return {};
  }

  Result handle(Job& job) override {
    const nlohmann::json& p = job.payload();
    if (p.empty()) return Result::ok();
    if (p.value("crash", false)) std::abort();
    if (p.value("hang", false)) {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
    if (p.value("throw", false)) throw std::runtime_error("noop: thrown as asked");
    if (p.value("permanent", false)) return Result::permanent("noop: permanent failure as asked");
    if (p.contains("acquire")) {
      if (const auto taken = job.acquire(p["acquire"]); !taken) {
        return Result::throttled(taken.wait, "noop: limiter " + p["acquire"].get<std::string>() + " is full");
      }
    }
    if (p.contains("hold_off")) {
      job.hold_off(p["hold_off"]["name"], std::chrono::milliseconds(p["hold_off"]["ms"].get<long long>()));
    }
    if (p.contains("follow_up")) {
      const nlohmann::json& f = p["follow_up"];
      jobhost::sdk::EnqueueOptions o;
      o.batch_id = f.value("batch_id", "");
      if (f.contains("flow_key")) o.flow_key = f["flow_key"].get<std::string>();
      try {
        job.enqueue(f["type"], f.value("payload", nlohmann::json::object()), o);
      } catch (const jobhost::sdk::EnqueueError& e) {
        return Result::permanent(std::string("noop: follow-up not enqueued: ") + e.what());
      }
    }
    if (job.attempt() <= p.value("fail_attempts", 0)) {
      const std::string msg = "noop: failing attempt " + std::to_string(job.attempt()) + " as asked";
      if (p.contains("retry_after_ms")) {
        return Result::retry_after(std::chrono::milliseconds(p["retry_after_ms"].get<long long>()), msg);
      }
      return Result::retry(msg);
    }
    if (const long long ms = p.value("sleep_ms", 0LL); ms > 0) {
      const auto start = std::chrono::steady_clock::now();
      const auto until = start + std::chrono::milliseconds(ms);
      for (auto now = start; now < until; now = std::chrono::steady_clock::now()) {
        if (job.cancelled()) return Result::retry("noop: cancelled while sleeping");
        job.heartbeat(std::chrono::duration<double>(now - start) / std::chrono::milliseconds(ms));
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 20LL)));
      }
      job.heartbeat(1.0);
    }
    return Result::ok();
  }
};

}  // namespace

JOBHOST_PLUGIN(Noop, "noop", "1.3.0", "noop")
