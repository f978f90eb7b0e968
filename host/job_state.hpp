// job_state.hpp: the job lifecycle in one place: every state's name, the rules
// that decide which state follows an attempt, and (job_state.cpp) the SQL that
// statements mentioning states are composed from. No other C++ file of the
// host spells a state's name (the dashboard page reads the API's JSON);
// tests/unit/job_state_test.cpp checks that, and that the sql/ migrations
// agree with this file; tests/integration/job_state_sql_test.cpp checks the
// completer's and the reaper's statements against these rules.
//
//   queued ──migrator──▶ migrated_to_redis ──fetcher (lease)──▶ running
//   running ──attempt ends──▶ completed | retry_scheduled | failed | queued (handed back)
//                             | cancelled (a cancellation was requested meanwhile)
//   running ──lease expired (reaper)──▶ queued | failed | cancelled
//   retry_scheduled ──run_at reached, migrator──▶ migrated_to_redis
//   migrated_to_redis ──lost by Redis (reconciler)──▶ queued
#pragma once

#include <array>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

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

inline constexpr std::array<JobState, 7> kJobStates = {
    JobState::kQueued,         JobState::kMigratedToRedis, JobState::kRunning,   JobState::kCompleted,
    JobState::kRetryScheduled, JobState::kFailed,          JobState::kCancelled,
};

// A job is inserted in this state (the column's default).
inline constexpr JobState kInitialState = JobState::kQueued;

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

constexpr std::optional<JobState> job_state_from_text(std::string_view t) {
  for (JobState s : kJobStates) {
    if (to_text(s) == t) return s;
  }
  return std::nullopt;
}

constexpr bool is_terminal(JobState s) {
  return s == JobState::kCompleted || s == JobState::kFailed || s == JobState::kCancelled;
}

// Waiting in PostgreSQL for run_at: what the migrator claims (and what the
// partial index jobs_ready_band_idx holds).
constexpr bool is_ready(JobState s) { return s == JobState::kQueued || s == JobState::kRetryScheduled; }

// job_logs.status: one row per attempt, saying how it ended. It is the state
// the attempt led to, except for an expired lease that put the job back in
// the queue, which is logged as "stalled".
inline constexpr std::string_view kStalledLog = "stalled";
// ... and an attempt a limit held back (Result::throttled), which does not count.
inline constexpr std::string_view kThrottledLog = "throttled";

// How an attempt ended (for a lease that expired: how the reaper found it).
enum class AttemptEnd {
  kSucceeded,          // the handler returned success
  kFailed,             // a retryable failure: an error, an exception, a timeout, an interruption
  kFailedPermanently,  // the handler declared a permanent failure, or the payload was refused
  kHandedBack,         // leased but never started (shutdown, reload): the attempt is given back
  kLeaseExpired,       // its host stopped heartbeating (killed, crashed or stuck): the reaper
  kThrottled,          // the handler was held back by a limit: it runs again later, the attempt given back
};

inline constexpr std::array<AttemptEnd, 6> kAttemptEnds = {
    AttemptEnd::kSucceeded, AttemptEnd::kFailed, AttemptEnd::kFailedPermanently, AttemptEnd::kHandedBack,
    AttemptEnd::kLeaseExpired, AttemptEnd::kThrottled,
};

// Attempts are counted at lease time (invariant 4), so attempt n of n is the last.
constexpr bool is_last_attempt(int attempt, int max_attempts) { return attempt >= max_attempts; }

// The state an attempt leads to when no cancellation was requested: a failure
// is retried unless it was the last attempt, which dead-letters it; a lease
// that expired puts the job back in the queue, or dead-letters it on its last
// attempt (so a poison pill that kills its hosts ends in the DLQ).
constexpr JobState state_after(AttemptEnd end, bool last_attempt) {
  switch (end) {
    case AttemptEnd::kSucceeded: return JobState::kCompleted;
    case AttemptEnd::kFailed: return last_attempt ? JobState::kFailed : JobState::kRetryScheduled;
    case AttemptEnd::kFailedPermanently: return JobState::kFailed;
    case AttemptEnd::kHandedBack: return JobState::kQueued;
    case AttemptEnd::kLeaseExpired: return last_attempt ? JobState::kFailed : JobState::kQueued;
    case AttemptEnd::kThrottled: return JobState::kRetryScheduled;  // never the last: it is given back
  }
  return JobState::kFailed;
}

// What a cancellation requested while the job was leased makes of that state:
// whatever the attempt returned short of success ends cancelled; a handler
// that ignored the request and succeeded leaves the job completed.
constexpr JobState when_cancel_requested(JobState s) {
  return s == JobState::kCompleted ? JobState::kCompleted : JobState::kCancelled;
}

// The one transition rule for the end of an attempt.
constexpr JobState next_state(AttemptEnd end, bool last_attempt, bool cancel_requested) {
  const JobState s = state_after(end, last_attempt);
  return cancel_requested ? when_cancel_requested(s) : s;
}

// Whether the attempt is given back (attempt_count lowered again): it never
// started, or a limit held it back.
constexpr bool gives_attempt_back(AttemptEnd end) {
  return end == AttemptEnd::kHandedBack || end == AttemptEnd::kThrottled;
}

// The job_logs status of an attempt that ended with `end` and led to `next`;
// nullopt when no row is written (an attempt handed back never ran).
constexpr std::optional<std::string_view> attempt_log(AttemptEnd end, JobState next) {
  if (end == AttemptEnd::kHandedBack && next == JobState::kQueued) return std::nullopt;
  if (end == AttemptEnd::kLeaseExpired && next == JobState::kQueued) return kStalledLog;
  if (end == AttemptEnd::kThrottled && next == JobState::kRetryScheduled) return kThrottledLog;
  return to_text(next);
}

// ---- SQL (job_state.cpp) ----
//
// A statement that mentions states is written as a template and composed
// once, at static initialisation, by state_sql():
//   {queued}, {running}, ...  a state's literal: 'queued'
//   {stalled}, {throttled}    the job_logs status of a stalled / throttled attempt
//   {ready}, {live}, {terminal}  lists of literals, for IN (...): the ready
//                             states, the non-terminal ones, the terminal ones
//   {name}                    a fragment passed in `fragments` (a rule below)
// A placeholder that is none of these throws std::logic_error naming it, so a
// typo stops every program at start-up. Nothing else in the text changes, so
// the composed statement is the SQL a reader would have written by hand, and
// a partial index whose predicate names a state still matches it.
using SqlFragments = std::initializer_list<std::pair<std::string_view, std::string>>;
std::string state_sql(std::string_view tmpl, SqlFragments fragments = {});

// 'queued'
std::string sql_literal(JobState s);
std::string sql_literal(std::string_view log_status);

// The rules as SQL expressions over a row. The conditions are SQL boolean
// expressions that are never NULL.
//   is_last_attempt:  `attempt >= max_attempts`
std::string sql_is_last_attempt(std::string_view attempt, std::string_view max_attempts);
//   next_state(end, last_attempt, cancel_requested): a CASE on the two conditions
std::string sql_next_state(AttemptEnd end, std::string_view last_attempt, std::string_view cancel_requested);
//   `state` (an expression holding the name of a state_after() result) with
//   when_cancel_requested() applied when cancel_requested holds
std::string sql_when_cancel_requested(std::string_view state, std::string_view cancel_requested);
//   attempt_log() for rows that ended with any of `ends`, from the state they
//   led to (`next`, an expression holding its name); NULL where no row is
//   logged. Throws std::logic_error if those ends need more than `next` to tell.
std::string sql_attempt_log(std::initializer_list<AttemptEnd> ends, std::string_view next);

}  // namespace jobhost
