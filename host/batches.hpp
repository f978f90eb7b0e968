// batches.hpp: what the host's state changes do to batches (DESIGN §10,
// sql/014_batches.sql). Every statement of the host that moves jobs into or
// out of a terminal state (the completer, the reaper, cancels, DLQ replays,
// bulk actions) adds the fragments below, so a batch's counts change in the
// same transaction as its members, one row update per batch per statement;
// once it commits, finish() lets the closed batches it touched finish.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace jobhost::batches {

// A data-modifying CTE body (for "batch_tally AS (...)") that adds to the
// counts of each batch the members of `rows` (a CTE with the columns
// batch_id, old_status, new_status) that entered a terminal state, and takes
// off those that left one. Returns the batch ids it counted for.
std::string tally_cte(std::string_view rows);

// A data-modifying CTE body (for "batch_reopen AS (...)") that reopens the
// finished batches of the members of `rows` a replay put back in the queue:
// they finish again (and call back again) when those members end.
std::string reopen_cte(std::string_view rows);

// A scalar subquery: the array of the ids of batch_tally's batches that are
// closed (those that may have finished with this statement), NULL if none.
std::string closed_touched_sql();

// After the statement's commit: finishes those of `ids` (a uuid[] literal)
// with nothing left to run. Returns how many finished.
int finish(pqxx::connection& conn, const std::string& ids);

// The reaper's sweep: finishes every closed batch with nothing left to run
// (one whose last member ended in a host that died before finish()). With
// by_counts, only those whose counts say so (cheap, every pass); without, it
// looks at the members of every closed batch (now and then: for counts that
// direct SQL changes of job states left wrong).
int sweep(pqxx::connection& conn, bool by_counts);

// A batch's state and counts (jobhost.batch_status), nullopt when there is
// none. Throws std::invalid_argument when id is not a UUID.
std::optional<nlohmann::json> status(pqxx::connection& conn, const std::string& id);

// The batches not yet finished or cancelled, newest first.
nlohmann::json unfinished(pqxx::connection& conn, int limit);

// What cancel() did.
enum class CancelResult { kCancelled, kAlreadyDone, kNotFound };

// jobhost.batch_cancel: members not started are cancelled now, running ones
// asked to stop; `cancelled` gets how many were cancelled now.
CancelResult cancel(pqxx::connection& conn, const std::string& id, long long& cancelled);

}  // namespace jobhost::batches
