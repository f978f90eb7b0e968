// jobhost/result.hpp: what a handler returns for one attempt.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "jobhost/abi.h"

namespace jobhost::sdk {

// The outcome of one attempt. Build one with the named constructors:
//   Result::ok()                         the job is completed
//   Result::retry("smtp 451")            retry with the plugin's backoff policy
//   Result::retry_after(30s, "429")      retry no sooner than the given delay
//   Result::permanent("bad recipient")   dead-letter now, no more attempts
//   Result::throttled(2s, "relay busy")  held back by a limit: run again after
//                                        the delay, without using an attempt
class Result {
 public:
  static Result ok() { return Result(JOBHOST_OK, {}, std::nullopt); }
  static Result retry(std::string message) {
    return Result(JOBHOST_RETRY, std::move(message), std::nullopt);
  }
  static Result retry_after(std::chrono::milliseconds delay, std::string message) {
    return Result(JOBHOST_RETRY, std::move(message), delay);
  }
  static Result permanent(std::string message) {
    return Result(JOBHOST_PERMANENT, std::move(message), std::nullopt);
  }
  // Since ABI 1.2. The attempt does not count: attempts stay as they were,
  // and a job_logs row with status "throttled" (and the message) records it.
  static Result throttled(std::chrono::milliseconds delay, std::string message = "throttled") {
    return Result(JOBHOST_THROTTLED, std::move(message), delay);
  }

  jobhost_outcome outcome() const { return outcome_; }
  const std::string& message() const { return message_; }
  const std::optional<std::chrono::milliseconds>& delay() const { return delay_; }

 private:
  Result(jobhost_outcome o, std::string m, std::optional<std::chrono::milliseconds> d)
      : outcome_(o), message_(std::move(m)), delay_(d) {}

  jobhost_outcome outcome_;
  std::string message_;
  std::optional<std::chrono::milliseconds> delay_;
};

}  // namespace jobhost::sdk
