// job_search.cpp: the job search and bulk actions (see job_search.hpp).
#include "job_search.hpp"

#include <algorithm>

#include "admin.hpp"
#include "batches.hpp"
#include "pg.hpp"

namespace jobhost::search {
namespace {

constexpr const char* kMaxId = "ffffffff-ffff-ffff-ffff-ffffffffffff";

// $1 the states (text[]), $2 the cursor (ids below it), $3 the limit, $4 the
// filters' values (text[], named even when no filter is given: a parameter
// must be used); {conditions} are kFilters' for the filters given. One branch
// per state, each an index range read backwards from the cursor for a page:
// the planner sees each state's value (a custom plan of the unnamed
// statement), so a rare state uses jobs_search_status_idx instead of walking
// the primary key past millions of rows of other states (measured at 10M
// jobs: 8.7 s for the first page when the states came from unnest(), 2 ms so).
constexpr const char* kBranch = R"sql(
    (SELECT * FROM jobhost.jobs j
      WHERE j.status = ($1::text[])[{k}] AND j.id < $2::uuid AND $4::text[] IS NOT NULL{conditions}
      ORDER BY j.id DESC LIMIT $3))sql";

constexpr const char* kTime = R"(YYYY-MM-DD"T"HH24:MI:SS.MS"Z")";

std::string ts(const char* column) {
  return std::string("to_char(") + column + " AT TIME ZONE 'UTC', '" + kTime + "')";
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// The FROM ... of a search over `states` states, from constant fragments only:
// values are parameters.
std::string picked(const Query& q, size_t states) {
  std::string conditions;
  for (size_t k = 0; k < q.filters.size(); ++k) {
    const FilterDef& f = kFilters.at(q.filters[k].first);
    conditions += "\n        AND " + replace_all(f.condition, "$V", "($4::text[])[" + std::to_string(k + 1) + "]");
  }
  const std::string branch = replace_all(kBranch, "{conditions}", conditions);
  std::string out = "\n  FROM (";
  for (size_t k = 1; k <= states; ++k) {
    out += (k > 1 ? "\n    UNION ALL" : "") + replace_all(branch, "{k}", std::to_string(k));
  }
  return out + ") j";
}

std::string states_array(const std::vector<JobState>& states) {
  PgArray a;
  for (JobState s : states) a.add(to_text(s));
  return a.str();
}

std::string values_array(const Query& q) {
  PgArray a;
  for (const auto& [_, value] : q.filters) a.add(value);
  return a.str();
}

std::vector<JobState> all_or(const std::vector<JobState>& states) {
  return states.empty() ? std::vector<JobState>(kJobStates.begin(), kJobStates.end()) : states;
}

// Refuses values PostgreSQL would not read, naming the parameter.
void check_values(pqxx::connection& conn, const Query& q) {
  if (!q.cursor.empty() && !admin::is_uuid(q.cursor)) {
    throw BadParam("cursor", "cursor: not a job id (give the next_cursor of the page before)");
  }
  for (const auto& [index, value] : q.filters) {
    const FilterDef& f = kFilters.at(index);
    if (std::string_view(f.value_type) == "text") continue;
    try {
      pqxx::nontransaction tx(conn);
      tx.exec_params(std::string("SELECT $1::") + f.value_type, value);
    } catch (const pqxx::data_exception&) {
      throw BadParam(f.param, std::string(f.param) + ": not a " + f.value_type + ": " + value);
    }
  }
}

nlohmann::json text_or_null(const pqxx::field& f) {
  return f.is_null() ? nlohmann::json(nullptr) : nlohmann::json(f.c_str());
}

const std::string kAttemptsSql = R"sql(
SELECT attempt_number, status, coalesce(log_message, ''), )sql" + ts("started_at") + ", " + ts("finished_at") +
                                 R"sql(,
       extract(epoch FROM duration) * 1000, )sql" + ts("created_at") + R"sql(
  FROM jobhost.job_logs WHERE job_id = $1::uuid ORDER BY attempt_number, id)sql";

// Per queue and band, the soonest of jobs_ready_band_idx past now.
const std::string kScheduledSql = state_sql(R"sql(
SELECT j.id::text, j.queue_name, j.status, j.priority, j.attempt_count, j.max_attempts, )sql" + ts("j.run_at") +
                                                R"sql(,
       left(coalesce(j.last_error_message, ''), 300)
  FROM jobhost.job_queues q CROSS JOIN generate_series(0, 2) AS b(band)
  CROSS JOIN LATERAL (
    SELECT * FROM jobhost.jobs j
     WHERE j.queue_name = q.name AND jobhost.priority_band(j.priority) = b.band
       AND j.status IN ({ready}) AND j.run_at > now()
     ORDER BY j.run_at LIMIT $1) j
 ORDER BY j.run_at LIMIT $1)sql");

// What each action does to the jobs picked, in the states it applies to ($1).
const std::string kReplaySql = state_sql(R"sql(
UPDATE jobhost.jobs t SET status = {queued}, attempt_count = 0, run_at = now(), failed_at = NULL,
       cancel_requested_at = NULL, updated_at = now()
  FROM picked p WHERE t.id = p.id AND t.status = ANY($1::text[])
RETURNING t.id, t.batch_id, p.old_status, t.status AS new_status)sql");
const std::string kCancelSql = state_sql(R"sql(
UPDATE jobhost.jobs t SET
       status = CASE WHEN t.status = {running} THEN t.status ELSE {cancelled} END,
       last_error_message = CASE WHEN t.status = {running} THEN t.last_error_message
                                 ELSE 'cancelled before it started' END,
       cancel_requested_at = coalesce(t.cancel_requested_at, now()), updated_at = now()
  FROM picked p WHERE t.id = p.id AND t.status = ANY($1::text[])
RETURNING t.id, t.batch_id, p.old_status, t.status AS new_status)sql");
// A batch counts what its members did: deleting finished ones changes no count.
constexpr const char* kDeleteSql = R"sql(
DELETE FROM jobhost.jobs t USING picked p WHERE t.id = p.id AND t.status = ANY($1::text[])
RETURNING t.id, NULL::uuid AS batch_id, p.old_status, p.old_status AS new_status)sql";

std::vector<JobState> applies_to(BulkAction action, const Query& q) {
  std::vector<JobState> out;
  for (JobState s : all_or(q.states)) {
    const bool yes = action == BulkAction::kReplay   ? (s == JobState::kFailed || s == JobState::kCancelled)
                     : action == BulkAction::kCancel ? !is_terminal(s)
                                                     : is_terminal(s);
    if (yes) out.push_back(s);
  }
  return out;
}

}  // namespace

nlohmann::json Query::describe() const {
  nlohmann::json out = nlohmann::json::object();
  if (!states.empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (JobState s : states) list.push_back(std::string(to_text(s)));
    out["status"] = list;
  }
  for (const auto& [index, value] : filters) out[kFilters.at(index).param] = value;
  return out;
}

nlohmann::json find(pqxx::connection& conn, const Query& q) {
  check_values(conn, q);
  const std::string sql = "SELECT j.id::text, j.queue_name, j.status, j.priority, j.attempt_count, j.max_attempts, " +
                          ts("j.created_at") + ", " + ts("j.run_at") + ", " +
                          ts("coalesce(j.completed_at, j.failed_at)") +
                          ", left(coalesce(j.last_error_message, ''), 300), j.flow_key" + picked(q, all_or(q.states).size()) +
                          "\n ORDER BY j.id DESC LIMIT $3";
  pqxx::nontransaction tx(conn);
  const pqxx::result r = tx.exec_params(sql, states_array(all_or(q.states)), q.cursor.empty() ? kMaxId : q.cursor,
                                        q.limit, values_array(q));
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& row : r) {
    jobs.push_back({{"id", row[0].c_str()},
                    {"type", row[1].c_str()},
                    {"status", row[2].c_str()},
                    {"priority", row[3].as<int>()},
                    {"attempts", row[4].as<int>()},
                    {"max_attempts", row[5].as<int>()},
                    {"created_at", text_or_null(row[6])},
                    {"run_at", text_or_null(row[7])},
                    {"finished_at", text_or_null(row[8])},
                    {"last_error", row[9].c_str()},
                    {"flow_key", text_or_null(row[10])}});
  }
  const bool more = static_cast<int>(jobs.size()) == q.limit;
  return {{"jobs", jobs}, {"next_cursor", more ? jobs.back()["id"] : nlohmann::json(nullptr)}};
}

nlohmann::json attempts(pqxx::connection& conn, const std::string& id) {
  if (!admin::is_uuid(id)) throw BadParam("id", "id: not a UUID: " + id);
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kAttemptsSql, id)) {
    out.push_back({{"attempt", row[0].as<int>()},
                   {"status", row[1].c_str()},
                   {"error", row[2].c_str()},
                   {"started_at", text_or_null(row[3])},
                   {"finished_at", text_or_null(row[4])},
                   {"duration_ms", row[5].is_null() ? nlohmann::json(nullptr) : nlohmann::json(row[5].as<double>())},
                   {"logged_at", text_or_null(row[6])}});
  }
  return out;
}

nlohmann::json scheduled(pqxx::connection& conn, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kScheduledSql, limit)) {
    out.push_back({{"id", row[0].c_str()},
                   {"type", row[1].c_str()},
                   {"status", row[2].c_str()},
                   {"priority", row[3].as<int>()},
                   {"attempts", row[4].as<int>()},
                   {"max_attempts", row[5].as<int>()},
                   {"run_at", text_or_null(row[6])},
                   {"last_error", row[7].c_str()}});
  }
  return out;
}

std::optional<BulkAction> bulk_action_from_text(const std::string& text) {
  if (text == "replay") return BulkAction::kReplay;
  if (text == "cancel") return BulkAction::kCancel;
  if (text == "delete") return BulkAction::kDelete;
  return std::nullopt;
}

const char* action_name(BulkAction a) {
  switch (a) {
    case BulkAction::kReplay: return "replay";
    case BulkAction::kCancel: return "cancel";
    case BulkAction::kDelete: return "delete";
  }
  return "?";
}

long long bulk_count(pqxx::connection& conn, BulkAction action, const Query& q) {
  check_values(conn, q);
  const std::vector<JobState> states = applies_to(action, q);
  if (states.empty()) return 0;
  pqxx::nontransaction tx(conn);
  return tx.exec_params1("SELECT count(*) FROM (SELECT j.id" + picked(q, states.size()) + "\n LIMIT $3) c",
                         states_array(states),
                         kMaxId, kMaxBulk + 1, values_array(q))[0]
      .as<long long>();
}

BulkResult bulk(pqxx::connection& conn, BulkAction action, const Query& q, long long expected,
                const std::function<void(pqxx::transaction_base&, long long)>& audit) {
  check_values(conn, q);
  const std::vector<JobState> states = applies_to(action, q);
  if (states.empty()) return {expected == 0, 0};
  const std::string& change = action == BulkAction::kReplay   ? kReplaySql
                              : action == BulkAction::kCancel ? kCancelSql
                                                              : std::string(kDeleteSql);
  pqxx::work tx(conn);
  // Members of batches: counted (replays reopen finished batches), and the
  // batches a cancel may have finished finish after the commit.
  const pqxx::row r = tx.exec_params1(
      "WITH picked AS (SELECT j.id, j.status AS old_status" + picked(q, states.size()) + "\n LIMIT $3), changed AS (" +
          change + "),\nbatch_tally AS (" + batches::tally_cte("changed") + "),\nbatch_reopen AS (" +
          batches::reopen_cte("changed") + ")\nSELECT count(*), " + batches::closed_touched_sql() + " FROM changed",
      states_array(states), kMaxId, kMaxBulk + 1, values_array(q));
  const long long n = r[0].as<long long>();
  if (n != expected || n > kMaxBulk) return {false, n};  // rolled back as tx goes
  audit(tx, n);
  if (action == BulkAction::kReplay) tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
  if (!r[1].is_null()) batches::finish(conn, r[1].c_str());
  return {true, n};
}

}  // namespace jobhost::search
