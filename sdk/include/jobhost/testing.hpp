// jobhost/testing.hpp: run a plugin's handle() in a unit test, in-process, with
// no PostgreSQL, Redis or host.
//
//   #include <jobhost/testing.hpp>
//   jobhost::sdk::testing::Harness h = jobhost::sdk::testing::Harness::of<Mailer>({{"smtp_url", "..."}});
//   auto run = h.run({"email.send", {{"to", "a@example.com"}}});
//   CHECK(run.ok());
//   CHECK(run.enqueued.size() == 1);
//
// The harness goes through the same C boundary as the host (the descriptor's
// create / validate / handle / destroy and a jobhost_host_api table of the
// current ABI), so what passes here passes the plugin's real entry points. It
// records what the handler did: its outcome, error message and requested retry
// delay, its log lines, its heartbeats, and the follow-up jobs it enqueued
// (which go nowhere: the harness hands back made-up ids). It does not emulate
// leases, timeouts, backoff or the database: those are the host's, and the
// host's own tests cover them.
//
// Thread-safe like the host: a handler may call back from threads of its own.
// One Harness runs one plugin instance; run() may be called from several
// threads at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobhost/abi.h"
#include "jobhost/plugin.hpp"

namespace jobhost::sdk::testing {

// The job handed to run(). Defaults: first of three attempts, priority 100.
struct TestJob {
  std::string type;
  nlohmann::json payload = nlohmann::json::object();
  int attempt = 1;
  int max_attempts = 3;
  int priority = 100;
  std::string id = "00000000-0000-7000-8000-000000000001";
  std::chrono::system_clock::time_point created_at = std::chrono::system_clock::now();
  std::string flow_key = "";  // none
};

struct LogLine {
  int level = JOBHOST_LOG_INFO;  // a jobhost_log_level
  std::string message;
};

// One follow-up job, as the handler asked for it.
struct Enqueued {
  std::string id;  // the id the harness handed back
  std::string type;
  nlohmann::json payload;
  std::optional<int> priority;  // nullopt: the default
  int64_t delay_ms = 0;
  int max_attempts = 0;     // 0: the queue's default
  std::string unique_key;   // "" none
  std::optional<std::string> flow_key;  // nullopt: from the payload
  std::string batch_id;     // "" none
};

// What one attempt did.
struct Run {
  jobhost_outcome outcome = JOBHOST_RETRY;
  std::string error;                      // the message of a RETRY / PERMANENT outcome
  std::optional<int64_t> retry_after_ms;  // set when the handler asked for a delay
  std::vector<LogLine> logs;
  std::vector<double> heartbeats;  // every progress value reported, in order
  std::vector<Enqueued> enqueued;
  std::vector<std::string> acquired;  // limiters taken (job.acquire returned ok)
  std::vector<std::pair<std::string, int64_t>> held_off;  // job.hold_off(name, ms)

  bool ok() const { return outcome == JOBHOST_OK; }
  bool throttled() const { return outcome == JOBHOST_THROTTLED; }
  bool retried() const { return outcome == JOBHOST_RETRY; }
  bool permanent() const { return outcome == JOBHOST_PERMANENT; }
  // True when some log line contains `text`.
  bool logged(const std::string& text) const {
    for (const auto& l : logs) {
      if (l.message.find(text) != std::string::npos) return true;
    }
    return false;
  }
};

namespace detail {

// The harness's side of one attempt; handed to the plugin as its opaque ctx.
struct Attempt {
  std::mutex mu;
  Run run;
  std::atomic<bool> cancelled{false};
  std::atomic<int> heartbeats_left_before_cancel{-1};  // < 0: never cancel by count
  // Enqueue behaviour, copied from the harness at the start of the attempt.
  std::string enqueue_failure;
  struct Shared* shared = nullptr;
};

// State shared by all attempts of one harness.
struct Shared {
  std::mutex mu;
  std::vector<LogLine> host_logs;  // lines logged outside a job (ctx NULL)
  std::map<std::string, std::string> unique_ids;  // type + '\0' + key -> id
  std::map<std::string, int64_t> limiter_waits;   // name -> the wait acquire() reports
  unsigned long next_id = 1;
};

// Logs with ctx NULL cannot name their harness; they go to the harness that
// created the instance last (tests rarely run two harnesses at once).
inline std::mutex& current_mu() {
  static std::mutex mu;
  return mu;
}
inline std::shared_ptr<Shared>& current_shared() {
  static std::shared_ptr<Shared> s;
  return s;
}

inline Attempt* attempt_of(jobhost_job_ctx* ctx) { return reinterpret_cast<Attempt*>(ctx); }

inline void fake_log(jobhost_job_ctx* ctx, int32_t level, const char* message) {
  try {
    LogLine line{level, message ? message : ""};
    if (ctx == nullptr) {
      std::lock_guard lock(current_mu());
      if (auto s = current_shared()) {
        std::lock_guard slock(s->mu);
        s->host_logs.push_back(std::move(line));
      }
      return;
    }
    Attempt* a = attempt_of(ctx);
    std::lock_guard lock(a->mu);
    a->run.logs.push_back(std::move(line));
  } catch (...) {
  }
}

inline void fake_heartbeat(jobhost_job_ctx* ctx, double progress) {
  if (ctx == nullptr) return;
  Attempt* a = attempt_of(ctx);
  try {
    std::lock_guard lock(a->mu);
    a->run.heartbeats.push_back(progress);
  } catch (...) {
  }
  if (a->heartbeats_left_before_cancel.load() > 0 && --a->heartbeats_left_before_cancel == 0) a->cancelled = true;
}

inline int32_t fake_cancelled(jobhost_job_ctx* ctx) {
  return ctx != nullptr && attempt_of(ctx)->cancelled.load() ? 1 : 0;
}

inline void fake_set_error(jobhost_job_ctx* ctx, const char* message) {
  if (ctx == nullptr) return;
  Attempt* a = attempt_of(ctx);
  try {
    std::lock_guard lock(a->mu);
    a->run.error = message ? message : "";
  } catch (...) {
  }
}

inline int32_t record_enqueue(jobhost_job_ctx* ctx, Enqueued e, char* id_out, char* err, size_t err_len) {
  auto fail = [&](const std::string& m) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", m.c_str());
    return 1;
  };
  try {
    if (ctx == nullptr) return fail("enqueue is only available inside a job");
    if (e.type.empty()) return fail("enqueue: job type is empty");
    Attempt* a = attempt_of(ctx);
    if (!a->enqueue_failure.empty()) return fail(a->enqueue_failure);
    if (!e.payload.is_object()) return fail("enqueue: payload must be a JSON object");
    {
      std::lock_guard lock(a->shared->mu);
      const std::string key = e.type + '\0' + e.unique_key;
      const auto known = e.unique_key.empty() ? a->shared->unique_ids.end() : a->shared->unique_ids.find(key);
      if (known != a->shared->unique_ids.end()) {
        e.id = known->second;
      } else {
        char id[40];
        std::snprintf(id, sizeof id, "00000000-0000-7000-9000-%012lu", a->shared->next_id++);
        e.id = id;
        if (!e.unique_key.empty()) a->shared->unique_ids.emplace(key, e.id);
      }
    }
    if (id_out != nullptr) std::snprintf(id_out, 37, "%s", e.id.c_str());
    std::lock_guard lock(a->mu);
    a->run.enqueued.push_back(std::move(e));
    return 0;
  } catch (const std::exception& ex) {
    return fail(std::string("enqueue: ") + ex.what());
  } catch (...) {
    return fail("enqueue failed");
  }
}

inline int32_t fake_enqueue(jobhost_job_ctx* ctx, const char* type, const char* payload_json, int32_t priority,
                            int64_t delay_ms, char* id_out, char* err, size_t err_len) {
  try {
    Enqueued e;
    e.type = type ? type : "";
    e.payload = nlohmann::json::parse(payload_json ? payload_json : "{}");
    if (priority >= 0) e.priority = priority;
    e.delay_ms = delay_ms < 0 ? 0 : delay_ms;
    return record_enqueue(ctx, std::move(e), id_out, err, err_len);
  } catch (const std::exception& ex) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "enqueue: %s", ex.what());
    return 1;
  }
}

inline int32_t fake_enqueue_job(jobhost_job_ctx* ctx, const jobhost_enqueue_request* r, char* id_out, char* err,
                                size_t err_len) {
  try {
    if (r == nullptr || r->struct_size < sizeof(jobhost_enqueue_request)) {
      if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "enqueue: request struct_size too small");
      return 1;
    }
    Enqueued e;
    e.type = r->type ? r->type : "";
    e.payload = nlohmann::json::parse(r->payload_json ? r->payload_json : "{}");
    if (r->use_priority != 0) e.priority = r->priority;
    e.delay_ms = r->delay_ms < 0 ? 0 : r->delay_ms;
    e.max_attempts = r->max_attempts < 0 ? 0 : r->max_attempts;
    e.unique_key = r->unique_key ? r->unique_key : "";
    if (r->flow_key != nullptr) e.flow_key = r->flow_key;
    e.batch_id = r->batch_id ? r->batch_id : "";
    return record_enqueue(ctx, std::move(e), id_out, err, err_len);
  } catch (const std::exception& ex) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "enqueue: %s", ex.what());
    return 1;
  }
}

// A limiter is free unless Harness::limit() said otherwise.
inline int64_t fake_acquire(jobhost_job_ctx* ctx, const char* limiter) {
  if (ctx == nullptr || limiter == nullptr) return -1;
  try {
    Attempt* a = attempt_of(ctx);
    int64_t wait = 0;
    {
      std::lock_guard lock(a->shared->mu);
      const auto it = a->shared->limiter_waits.find(limiter);
      if (it != a->shared->limiter_waits.end()) wait = it->second;
    }
    if (wait == 0) {
      std::lock_guard lock(a->mu);
      a->run.acquired.emplace_back(limiter);
    }
    return wait;
  } catch (...) {
    return -1;
  }
}

inline void fake_hold_off(jobhost_job_ctx* ctx, const char* limiter, int64_t delay_ms) {
  if (ctx == nullptr || limiter == nullptr) return;
  try {
    Attempt* a = attempt_of(ctx);
    std::lock_guard lock(a->mu);
    a->run.held_off.emplace_back(limiter, delay_ms);
  } catch (...) {
  }
}

inline const jobhost_host_api* fake_host_api() {
  static const jobhost_host_api api = {
      JOBHOST_ABI_VERSION, &fake_log,  &fake_heartbeat, &fake_cancelled, &fake_set_error, &fake_enqueue,
      sizeof(jobhost_host_api), &fake_enqueue_job, &fake_acquire, &fake_hold_off,
  };
  return &api;
}

// A descriptor for a plugin class, as JOBHOST_PLUGIN builds one, for tests
// that compile the class without its exported entry points.
template <typename P>
const jobhost_plugin* descriptor_of(const char* name) {
  static const char* const types[] = {nullptr};
  static const jobhost_plugin d = {
      JOBHOST_ABI_VERSION,
      name,
      "test",
      types,
      ::jobhost::sdk::detail::DefaultRetry<P>::get(nullptr),
      &::jobhost::sdk::detail::create<P>,
      &::jobhost::sdk::detail::destroy,
      &::jobhost::sdk::detail::validate,
      &::jobhost::sdk::detail::handle,
      sizeof(jobhost_plugin),
  };
  return &d;
}

}  // namespace detail

// Thrown by the Harness constructor when the plugin refuses its settings.
class CreateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Harness {
 public:
  // The plugin behind an exported descriptor: Harness(jobhost_plugin_entry(), settings)
  // in a test binary that compiles the plugin's source with its JOBHOST_PLUGIN line.
  // Throws CreateError with the plugin's message when create() refuses the settings.
  explicit Harness(const jobhost_plugin* descriptor, const nlohmann::json& settings = nlohmann::json::object())
      : descriptor_(descriptor), shared_(std::make_shared<detail::Shared>()) {
    if (descriptor_ == nullptr) throw CreateError("no plugin descriptor");
    {
      std::lock_guard lock(detail::current_mu());
      detail::current_shared() = shared_;
    }
    char err[1024] = {0};
    instance_ = descriptor_->create(detail::fake_host_api(), settings.dump().c_str(), err, sizeof err);
    if (instance_ == nullptr) throw CreateError(err[0] ? err : "create() returned NULL");
  }

  // The class alone, without its exported entry points.
  template <typename P>
  static Harness of(const nlohmann::json& settings = nlohmann::json::object()) {
    return Harness(detail::descriptor_of<P>("test"), settings);
  }

  Harness(Harness&& o) noexcept
      : descriptor_(o.descriptor_), instance_(std::exchange(o.instance_, nullptr)), shared_(std::move(o.shared_)),
        enqueue_failure_(std::move(o.enqueue_failure_)), cancel_after_(o.cancel_after_) {}
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;
  ~Harness() {
    if (instance_ != nullptr) descriptor_->destroy(instance_);
  }

  // The plugin's validate(): "" when the payload is acceptable, else its message.
  std::string validate(const std::string& type, const nlohmann::json& payload) const {
    char err[1024] = {0};
    if (descriptor_->validate(instance_, type.c_str(), payload.dump().c_str(), err, sizeof err) == 0) return {};
    return err[0] ? err : "payload rejected by the plugin";
  }

  // Runs one attempt of `job` through handle() and returns what it did.
  Run run(const TestJob& job) {
    const std::string payload = job.payload.dump();
    jobhost_job c{};
    c.id = job.id.c_str();
    c.type = job.type.c_str();
    c.payload_json = payload.c_str();
    c.attempt = job.attempt;
    c.max_attempts = job.max_attempts;
    c.struct_size = sizeof c;
    c.priority = job.priority;
    c.created_at_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(job.created_at.time_since_epoch()).count();
    c.flow_key = job.flow_key.c_str();
    detail::Attempt a;
    a.shared = shared_.get();
    {
      std::lock_guard lock(mu_);
      a.enqueue_failure = enqueue_failure_;
      a.heartbeats_left_before_cancel = cancel_after_;
      a.cancelled = cancel_after_ == 0;
    }
    int64_t retry_after_ms = -1;
    const int32_t code =
        descriptor_->handle(instance_, &c, reinterpret_cast<jobhost_job_ctx*>(&a), &retry_after_ms);
    std::lock_guard lock(a.mu);
    Run out = std::move(a.run);
    out.outcome = static_cast<jobhost_outcome>(code);
    if (retry_after_ms >= 0) out.retry_after_ms = retry_after_ms;
    return out;
  }

  // From now on every enqueue fails with `message` ("" restores success).
  void fail_enqueues(std::string message) {
    std::lock_guard lock(mu_);
    enqueue_failure_ = std::move(message);
  }
  // Attempts started from now on see cancelled() after `heartbeats` heartbeats
  // (0: from the start; negative: never, the default).
  void cancel_after_heartbeats(int heartbeats) {
    std::lock_guard lock(mu_);
    cancel_after_ = heartbeats;
  }
  // From now on job.acquire(name) reports `wait` (0: free again), as if the
  // limiter were full on the host.
  void limit(const std::string& name, std::chrono::milliseconds wait) {
    std::lock_guard lock(shared_->mu);
    shared_->limiter_waits[name] = wait.count();
  }
  // Lines the plugin logged outside any job (from its constructor, say).
  std::vector<LogLine> host_logs() const {
    std::lock_guard lock(shared_->mu);
    return shared_->host_logs;
  }
  // The default retry policy the plugin declares ("" when none).
  std::string default_retry_json() const {
    return descriptor_->default_retry_json ? descriptor_->default_retry_json : "";
  }

 private:
  const jobhost_plugin* descriptor_;
  void* instance_ = nullptr;
  std::shared_ptr<detail::Shared> shared_;
  mutable std::mutex mu_;
  std::string enqueue_failure_;
  int cancel_after_ = -1;
};

}  // namespace jobhost::sdk::testing
