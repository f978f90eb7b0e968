// audit.hpp: jobhost.audit_log (sql/011_audit.sql): one row per admin write.
//
// Any write route records what it did after doing it:
//   audit::record(conn, {.actor = who, .action = "queue.pause", .target = queue, .count = 1});
// In the API, ApiServer's Impl::audit(req, action, target, count, detail)
// fills in the actor from the request's token and the client's address.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace jobhost::audit {

struct Entry {
  std::string actor;   // the token's name (never the token)
  std::string action;  // "job.cancel", "dlq.replay", "jobs.bulk_replay", ...
  std::string target;  // a job id, a queue, or "" for a filtered set
  long long count = 0;  // jobs affected
  nlohmann::json detail = nlohmann::json::object();  // a JSON object: the filter, the client
};

// Inserts the row in its own statement (autocommit), or inside tx when the
// caller wants it in the same transaction as the change. Throws on a database error.
void record(pqxx::connection& conn, const Entry& e);
void record(pqxx::transaction_base& tx, const Entry& e);

// The latest rows, newest first: [{id, at, actor, action, target, count, detail}].
nlohmann::json recent(pqxx::connection& conn, int limit);

}  // namespace jobhost::audit
