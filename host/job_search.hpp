// job_search.hpp: finding any job among millions, and acting on a filtered
// set (DESIGN §12; GET /api/v1/jobs, POST /api/v1/jobs/bulk).
//
// A search is newest first, a page at a time: keyset on the job id (ids are
// time-ordered), one index range per state looked at (sql/012_job_search.sql),
// so a page costs the same at ten million jobs as at a thousand.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "job_state.hpp"

namespace jobhost::search {

// A filter beyond the state: the query parameter that gives its value and
// its condition on the jobs row `j`, with $V standing for the value (text).
struct FilterDef {
  const char* param;
  const char* condition;
  const char* value_type;  // the value is refused unless it casts to this (text, timestamptz, ...)
};

// The filters of a search. Adding one is one line here (and an index if it
// must stay cheap on its own).
inline const std::vector<FilterDef> kFilters = {
    {"type", "j.queue_name = $V", "text"},
    // Keyed jobs at rest are in jobs_flow_key_at_rest_idx (017); those in
    // flight are few, and found through their states' own indexes.
    {"flow_key", "j.flow_key = $V", "text"},
    // A job's id is made in its enqueue transaction, at or after created_at:
    // the id bound is safe for since, and for until allows 10 minutes.
    {"since", "j.id >= jobhost.job_id_floor($V::timestamptz) AND j.created_at >= $V::timestamptz", "timestamptz"},
    {"until", "j.id < jobhost.job_id_floor($V::timestamptz + interval '10 minutes') AND j.created_at < $V::timestamptz",
     "timestamptz"},
};

// A query parameter whose value cannot be used.
struct BadParam : std::invalid_argument {
  BadParam(std::string p, const std::string& what) : std::invalid_argument(what), param(std::move(p)) {}
  std::string param;
};

struct Query {
  std::vector<JobState> states;  // empty: every state
  // (index into kFilters, value) for the filters given.
  std::vector<std::pair<size_t, std::string>> filters;
  std::string cursor;  // "" first page, else the next_cursor of the page before
  int limit = 50;
  nlohmann::json describe() const;  // the filter as JSON, for the audit log
};

// The most jobs one bulk action may touch: more is refused (narrow the filter).
inline constexpr long long kMaxBulk = 50000;

// One page: {"jobs": [{id, type, status, priority, attempts, max_attempts,
// created_at, run_at, finished_at, last_error}], "next_cursor": id or null}.
// Throws BadParam naming the parameter when a value is not valid (a cursor
// that is no job id, a time PostgreSQL cannot read).
nlohmann::json find(pqxx::connection& conn, const Query& q);

// The attempts of one job, oldest first: [{attempt, status, error, started_at,
// finished_at, duration_ms, logged_at}].
nlohmann::json attempts(pqxx::connection& conn, const std::string& id);

// Jobs waiting for a future run_at (scheduled or backing off), soonest first.
nlohmann::json scheduled(pqxx::connection& conn, int limit);

enum class BulkAction { kReplay, kCancel, kDelete };
// "replay" | "cancel" | "delete"; nullopt otherwise.
std::optional<BulkAction> bulk_action_from_text(const std::string& text);
const char* action_name(BulkAction a);

// How many jobs the action would change now: those of the filter in the
// states it applies to (replay: failed and cancelled; cancel: not finished;
// delete: finished). At most kMaxBulk + 1.
long long bulk_count(pqxx::connection& conn, BulkAction action, const Query& q);

// Does the action in one transaction when it changes exactly `expected` jobs
// (the count the operator confirmed), recording it with `audit` in the same
// transaction; else changes nothing. Returns the jobs it changed or would
// have changed.
struct BulkResult {
  bool done = false;
  long long count = 0;
};
BulkResult bulk(pqxx::connection& conn, BulkAction action, const Query& q, long long expected,
                const std::function<void(pqxx::transaction_base&, long long)>& audit);

}  // namespace jobhost::search
