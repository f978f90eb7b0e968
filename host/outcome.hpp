// outcome.hpp: what happened to one leased attempt, on its way to PostgreSQL.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "job_state.hpp"

namespace jobhost {

// The job's next state as the host that held the lease sees it: the
// state_after() of the attempt. A cancellation requested meanwhile is applied
// by the completer in PostgreSQL (next_state). kHandBack returns a leased job
// that never started; kThrottle one a limit held back (Result::throttled).
enum class OutcomeKind { kCompleted, kRetry, kFailed, kHandBack, kThrottle };

constexpr JobState outcome_state(OutcomeKind k) {
  switch (k) {
    case OutcomeKind::kCompleted: return JobState::kCompleted;
    case OutcomeKind::kRetry: return JobState::kRetryScheduled;
    case OutcomeKind::kFailed: return JobState::kFailed;
    case OutcomeKind::kHandBack: return JobState::kQueued;
    case OutcomeKind::kThrottle: return state_after(AttemptEnd::kThrottled, false);
  }
  return JobState::kFailed;
}

// The kind of outcome an attempt's end leads to (the rule of job_state.hpp).
constexpr OutcomeKind outcome_for(AttemptEnd end, bool last_attempt) {
  if (end == AttemptEnd::kThrottled) return OutcomeKind::kThrottle;  // its own statement (completer.cpp)
  switch (state_after(end, last_attempt)) {
    case JobState::kCompleted: return OutcomeKind::kCompleted;
    case JobState::kRetryScheduled: return OutcomeKind::kRetry;
    case JobState::kQueued: return OutcomeKind::kHandBack;
    default: return OutcomeKind::kFailed;
  }
}

// The status text the completer writes for each kind.
constexpr std::string_view outcome_status(OutcomeKind k) { return to_text(outcome_state(k)); }

struct Outcome {
  std::string job_id;
  int attempt = 0;  // the lease guard: only this attempt's outcome is written
  OutcomeKind kind = OutcomeKind::kCompleted;
  int64_t delay_ms = 0;  // kRetry: run again this long after finished
  std::string message;   // error text for kRetry / kFailed
  int64_t started_us = 0;   // handler start, µs since the Unix epoch
  int64_t finished_us = 0;  // handler end
};

inline int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace jobhost
