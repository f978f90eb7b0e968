// outcome.hpp: what happened to one leased attempt, on its way to PostgreSQL.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace jobhost {

// The job's next state. kHandBack returns a leased job that never started.
enum class OutcomeKind { kCompleted, kRetry, kFailed, kHandBack };

// The status text the completer writes for each kind.
constexpr const char* outcome_status(OutcomeKind k) {
  switch (k) {
    case OutcomeKind::kCompleted: return "completed";
    case OutcomeKind::kRetry: return "retry_scheduled";
    case OutcomeKind::kFailed: return "failed";
    case OutcomeKind::kHandBack: return "queued";
  }
  return "?";
}

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
