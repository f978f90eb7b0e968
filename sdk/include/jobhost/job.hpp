// jobhost/job.hpp: one attempt of one job, as a handler sees it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jobhost/abi.h"

namespace jobhost::sdk {

// Thrown by Job::enqueue when the host could not store the follow-up job.
class EnqueueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Options of a follow-up job (Job::enqueue). Defaults: priority 100, runnable
// at once, the queue's max_attempts, no unique key.
struct EnqueueOptions {
  int priority = -1;                           // < 0: the default, 100; lower runs first
  std::chrono::milliseconds delay{0};          // runnable this long from now
  int max_attempts = 0;                        // <= 0: the queue's default
  std::string unique_key;                      // "" none; else a second enqueue with the
                                               // same type and key returns the first id
  // Since ABI 1.3:
  std::optional<std::string> flow_key;         // none: from the payload by the queue's flow.key
  std::string batch_id;                        // "" none; else an open batch the job joins
                                               // (jobhost.batch_open; EnqueueError if not open)
};

// A view of the running attempt. Valid only inside Plugin::handle; not copyable
// out of it. Every call is thread-safe: a handler may share the Job with
// threads of its own while handle() runs (and not after it returns).
class Job {
 public:
  Job(const jobhost_host_api* host, const jobhost_job* job, jobhost_job_ctx* ctx)
      : host_(host), job_(job), ctx_(ctx) {}
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  std::string_view id() const { return job_->id; }
  std::string_view type() const { return job_->type; }
  // The attempt number, 1-based; attempt() == max_attempts() is the last try.
  int attempt() const { return job_->attempt; }
  int max_attempts() const { return job_->max_attempts; }
  // 0..1000, lower runs first (<= 50 is the high band, 51..150 normal).
  int priority() const { return job_->priority; }
  // When the job was enqueued.
  std::chrono::system_clock::time_point created_at() const {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(job_->created_at_ms));
  }
  std::string_view payload_text() const { return job_->payload_json; }
  // The job's flow key (DESIGN §9): a tenant, an endpoint; "" when it has none.
  std::string_view flow_key() const { return job_->flow_key != nullptr ? job_->flow_key : ""; }

  // A named limiter of the config's limiters: section, taken or not.
  struct Acquired {
    bool ok = false;
    std::chrono::milliseconds wait{0};  // when !ok: try again no sooner than this
    explicit operator bool() const { return ok; }
  };
  // Takes the limiter `name` ("relay:primary", "domain:example.com") for the
  // rest of this attempt, across all hosts. When it is full or held back
  // (hold_off), nothing is held and the wait says when to try again: return
  // Result::throttled(wait) so the job comes back then without using an
  // attempt. When Redis cannot be reached the answer is a one-second wait.
  // Cost: one Redis round trip for a name a limiters: entry with limits
  // governs; none for other names, which are free unless held back: the host
  // reads every host's hold-offs at most every 100 ms.
  Acquired acquire(const std::string& name) const {
    const int64_t wait = host_->acquire(ctx_, name.c_str());
    if (wait == 0) return {true, {}};
    return {false, std::chrono::milliseconds(wait > 0 ? wait : 1000)};
  }
  // Makes every host wait `delay` before the limiter `name` is taken again
  // (a relay or mailbox provider deferred us): this host at once, the others
  // within 100 ms for a name no limiters: entry with limits governs. Cost:
  // two Redis round trips.
  void hold_off(const std::string& name, std::chrono::milliseconds delay) const {
    host_->hold_off(ctx_, name.c_str(), delay.count());
  }

  // The payload, parsed on first use (once, whichever thread asks first).
  // Throws nlohmann::json::parse_error only if the host handed over invalid
  // JSON, which it never stores.
  const nlohmann::json& payload() const {
    // Checked twice rather than std::call_once: glibc's pthread_once makes a
    // futex system call each time it runs the function, once per job.
    if (!payload_parsed_.load(std::memory_order_acquire)) {
      std::lock_guard lock(payload_mu_);
      if (!payload_parsed_.load(std::memory_order_relaxed)) {
        payload_ = nlohmann::json::parse(job_->payload_json);
        payload_parsed_.store(true, std::memory_order_release);
      }
    }
    return payload_;
  }

  // Log lines attributed to the job on the host's log (not stored in PostgreSQL).
  void log_debug(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_DEBUG, m.c_str()); }
  void log_info(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_INFO, m.c_str()); }
  void log_warn(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_WARN, m.c_str()); }
  void log_error(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_ERROR, m.c_str()); }

  // Records progress in [0, 1] (negative: unknown). The host writes the last
  // value to the job's row at its next lease extension (host.lease.heartbeat_ms),
  // where `jobctl status`, the API and the dashboard show it. It does not extend
  // the lease: the host extends every running attempt's lease by itself.
  // Cheap: an atomic store.
  void heartbeat(double progress = -1.0) const { host_->heartbeat(ctx_, progress); }

  // True once the host wants this attempt to stop (timeout, cancel, shutdown,
  // lost lease). Return promptly (a Result::retry) when it is.
  bool cancelled() const { return host_->cancelled(ctx_) != 0; }

  // Enqueues a follow-up job and returns its id. Throws EnqueueError on failure.
  // Cost: one PostgreSQL round trip in a transaction of its own, committed (the
  // job durable) before it returns. It joins no transaction of the plugin: to
  // enqueue atomically with your own writes, call the SQL function
  // jobhost.enqueue(...) inside your own transaction instead.
  std::string enqueue(const std::string& type, const nlohmann::json& payload, int priority = -1,
                      std::chrono::milliseconds delay = std::chrono::milliseconds(0)) const {
    EnqueueOptions o;
    o.priority = priority;
    o.delay = delay;
    return enqueue(type, payload, o);
  }
  std::string enqueue(const std::string& type, const nlohmann::json& payload,
                      const EnqueueOptions& options) const {
    char id[40] = {0};
    char err[512] = {0};
    const std::string text = payload.dump();
    jobhost_enqueue_request r{};
    r.struct_size = sizeof r;
    r.type = type.c_str();
    r.payload_json = text.c_str();
    r.use_priority = options.priority >= 0 ? 1 : 0;
    r.priority = options.priority;
    r.delay_ms = static_cast<int64_t>(options.delay.count());
    r.max_attempts = options.max_attempts;
    r.unique_key = options.unique_key.c_str();
    r.flow_key = options.flow_key ? options.flow_key->c_str() : nullptr;
    r.batch_id = options.batch_id.c_str();
    if (host_->enqueue_job(ctx_, &r, id, err, sizeof err) != 0) throw EnqueueError(err);
    return id;
  }

 private:
  const jobhost_host_api* host_;
  const jobhost_job* job_;
  jobhost_job_ctx* ctx_;
  mutable std::atomic<bool> payload_parsed_{false};
  mutable std::mutex payload_mu_;
  mutable nlohmann::json payload_;
};

}  // namespace jobhost::sdk
