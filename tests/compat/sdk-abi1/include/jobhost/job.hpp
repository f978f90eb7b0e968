// jobhost/job.hpp: one attempt of one job, as a handler sees it.
#pragma once

#include <chrono>
#include <cstdint>
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

// A view of the running attempt. Valid only inside Plugin::handle; not copyable
// out of it. All calls are cheap and thread-safe.
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
  std::string_view payload_text() const { return job_->payload_json; }

  // The payload parsed once, on first use. Throws nlohmann::json::parse_error
  // only if the host handed over invalid JSON, which it never stores.
  const nlohmann::json& payload() const {
    if (!payload_) payload_ = nlohmann::json::parse(job_->payload_json);
    return *payload_;
  }

  void log_debug(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_DEBUG, m.c_str()); }
  void log_info(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_INFO, m.c_str()); }
  void log_warn(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_WARN, m.c_str()); }
  void log_error(const std::string& m) const { host_->log(ctx_, JOBHOST_LOG_ERROR, m.c_str()); }

  // Extends the lease; progress in [0, 1], or negative when unknown.
  void heartbeat(double progress = -1.0) const { host_->heartbeat(ctx_, progress); }

  // True once the host wants this attempt to stop (timeout, cancel, shutdown).
  bool cancelled() const { return host_->cancelled(ctx_) != 0; }

  // Enqueues a follow-up job and returns its id. Throws EnqueueError on failure.
  std::string enqueue(const std::string& type, const nlohmann::json& payload, int priority = -1,
                      std::chrono::milliseconds delay = std::chrono::milliseconds(0)) const {
    char id[40] = {0};
    char err[512] = {0};
    const std::string text = payload.dump();
    if (host_->enqueue(ctx_, type.c_str(), text.c_str(), priority,
                       static_cast<int64_t>(delay.count()), id, err, sizeof err) != 0) {
      throw EnqueueError(err);
    }
    return id;
  }

 private:
  const jobhost_host_api* host_;
  const jobhost_job* job_;
  jobhost_job_ctx* ctx_;
  mutable std::optional<nlohmann::json> payload_;
};

}  // namespace jobhost::sdk
