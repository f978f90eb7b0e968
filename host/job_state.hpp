// job_state.hpp: the job lifecycle, named as in the seeds, converted to text in one place.
#pragma once

#include <optional>
#include <string_view>

namespace jobhost {

enum class JobState {
  kQueued,           // in PostgreSQL, waiting for run_at and a migrator
  kMigratedToRedis,  // handed to a Redis priority list, waiting for a worker
  kRunning,          // leased by a worker; attempt_count already counts this attempt
  kCompleted,        // terminal: succeeded
  kRetryScheduled,   // failed an attempt; runs again at run_at
  kFailed,           // terminal: dead-lettered (attempts exhausted or permanent failure)
  kCancelled,        // terminal: cancelled by an operator
};

constexpr std::string_view to_text(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kMigratedToRedis: return "migrated_to_redis";
    case JobState::kRunning: return "running";
    case JobState::kCompleted: return "completed";
    case JobState::kRetryScheduled: return "retry_scheduled";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

inline std::optional<JobState> job_state_from_text(std::string_view t) {
  for (JobState s : {JobState::kQueued, JobState::kMigratedToRedis, JobState::kRunning,
                     JobState::kCompleted, JobState::kRetryScheduled, JobState::kFailed,
                     JobState::kCancelled}) {
    if (to_text(s) == t) return s;
  }
  return std::nullopt;
}

constexpr bool is_terminal(JobState s) {
  return s == JobState::kCompleted || s == JobState::kFailed || s == JobState::kCancelled;
}

}  // namespace jobhost
