// admin.hpp: the operator's operations on jobs and queues, shared by jobctl and
// the admin HTTP API so both do exactly the same thing.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace jobhost::admin {

// A job as stored: every column of interest, timestamps as ISO text; nullopt
// when no job has that id. Throws std::invalid_argument when id is not a UUID.
std::optional<nlohmann::json> job(pqxx::connection& conn, const std::string& id);

// Per queue: depth by priority band (waiting = queued, in Redis or retry
// scheduled), running, failed (DLQ) and completed counts, and the jobs that
// finished in the last minute by outcome.
// Also whether it is paused, dispatched by key, and how many of its keys are paused.
nlohmann::json queues(pqxx::connection& conn);

// The `limit` keys of a queue with the most jobs not yet started:
// [{"key", "waiting", "running", "paused"}]; paused keys with no jobs too.
nlohmann::json queue_keys(pqxx::connection& conn, const std::string& queue, int limit);

// Attempts finished per minute over the last `minutes`, by outcome:
// [{"minute": ISO, "completed": n, "failed": n, "retried": n, "cancelled": n}], oldest first, gaps filled.
nlohmann::json throughput(pqxx::connection& conn, int minutes);

// Running jobs, the longest-leased first: id, type, attempt, worker, start and
// the progress their handler last reported (null: none).
nlohmann::json running(pqxx::connection& conn, int limit);

// The latest failed attempts (retried, dead-lettered, stalled), newest first.
nlohmann::json recent_failures(pqxx::connection& conn, int limit);

// Dead-lettered jobs, newest first (queue "" = all).
nlohmann::json dlq(pqxx::connection& conn, const std::string& queue, int limit);

// Queues again exactly the failed job `id`, or every failed job of `queue`
// (one of the two, the other empty), with fresh attempts; their history stays
// in job_logs. Returns how many were replayed.
long replay(pqxx::connection& conn, const std::string& id, const std::string& queue);

// What cancel() did.
enum class CancelResult {
  kCancelled,   // it had not started: now cancelled
  kRequested,   // it is running: its handler is asked to stop; it ends cancelled
  kFinished,    // already completed, failed or cancelled: nothing to do
  kNotFound,
};
CancelResult cancel(pqxx::connection& conn, const std::string& id);

// True when text is a UUID in its canonical text form.
bool is_uuid(const std::string& text);

}  // namespace jobhost::admin
