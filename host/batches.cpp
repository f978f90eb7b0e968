// batches.cpp: the batch fragments of the host's statements (batches.hpp).
#include "batches.hpp"

#include "admin.hpp"
#include "job_state.hpp"

namespace jobhost::batches {

std::string tally_cte(std::string_view rows) {
  std::string delta;
  for (JobState s : {JobState::kCompleted, JobState::kFailed, JobState::kCancelled}) {
    const std::string lit = sql_literal(s);
    delta += ",\n         count(*) FILTER (WHERE new_status = " + lit + ") - count(*) FILTER (WHERE old_status = " +
             lit + ")";
  }
  return R"sql(
  INSERT INTO jobhost.batch_counts AS c (batch_id, shard, completed, failed, cancelled)
  SELECT batch_id, jobhost.batch_shard())sql" +
         delta + "\n    FROM " + std::string(rows) + R"sql(
   WHERE batch_id IS NOT NULL AND old_status IS DISTINCT FROM new_status
   GROUP BY batch_id
  ON CONFLICT (batch_id, shard) DO UPDATE
     SET completed = c.completed + excluded.completed, failed = c.failed + excluded.failed,
         cancelled = c.cancelled + excluded.cancelled
  RETURNING batch_id)sql";
}

std::string reopen_cte(std::string_view rows) {
  return state_sql(R"sql(
  UPDATE jobhost.batches SET state = 'closed', finished_at = NULL
   WHERE state = 'finished' AND id IN (SELECT batch_id FROM )sql" +
                   std::string(rows) + R"sql(
                                        WHERE old_status IN ({terminal}) AND new_status IN ({live}))
  RETURNING id)sql");
}

std::string closed_touched_sql() {
  return "(SELECT array_agg(b.id) FROM jobhost.batches b WHERE b.id IN (SELECT batch_id FROM batch_tally) "
         "AND b.state = 'closed')";
}

int finish(pqxx::connection& conn, const std::string& ids) {
  pqxx::nontransaction tx(conn);
  return tx.exec_params1("SELECT jobhost.batch_finish($1::uuid[])", ids)[0].as<int>();
}

int sweep(pqxx::connection& conn, bool by_counts) {
  pqxx::nontransaction tx(conn);
  return tx
      .exec_params1("SELECT coalesce(jobhost.batch_finish(array_agg(id), $1), 0) FROM jobhost.batches "
                    "WHERE state = 'closed'",
                    by_counts)[0]
      .as<int>();
}

namespace {

std::string ts(const char* column) {
  return std::string("to_char(") + column + R"( AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))";
}

const std::string kStatusColumns = "id::text, state, description, coalesce(callback_type, ''), "
                                   "coalesce(callback_job_id::text, ''), finishes, total, completed, failed, "
                                   "cancelled, " + ts("created_at") + ", " + ts("closed_at") + ", " +
                                   ts("finished_at") + ", " + ts("cancelled_at") + " FROM jobhost.batch_status";

nlohmann::json nullable(const pqxx::field& f) {
  return f.is_null() || f.c_str()[0] == '\0' ? nlohmann::json(nullptr) : nlohmann::json(f.c_str());
}

nlohmann::json row_json(const pqxx::row& r) {
  const long long total = r[6].as<long long>();
  const long long done = r[7].as<long long>() + r[8].as<long long>() + r[9].as<long long>();
  return {{"id", r[0].c_str()},
          {"state", r[1].c_str()},
          {"description", r[2].c_str()},
          {"callback_type", nullable(r[3])},
          {"callback_job_id", nullable(r[4])},
          {"finishes", r[5].as<int>()},
          {"total", total},
          // The members that ended in each terminal state, named as the states are.
          {std::string(to_text(JobState::kCompleted)), r[7].as<long long>()},
          {std::string(to_text(JobState::kFailed)), r[8].as<long long>()},
          {std::string(to_text(JobState::kCancelled)), r[9].as<long long>()},
          {"pending", total - done},
          {"created_at", nullable(r[10])},
          {"closed_at", nullable(r[11])},
          {"finished_at", nullable(r[12])},
          {"cancelled_at", nullable(r[13])}};
}

}  // namespace

std::optional<nlohmann::json> status(pqxx::connection& conn, const std::string& id) {
  if (!admin::is_uuid(id)) throw std::invalid_argument("id: not a UUID: " + id);
  pqxx::nontransaction tx(conn);
  const pqxx::result r = tx.exec_params("SELECT " + kStatusColumns + " WHERE id = $1::uuid", id);
  if (r.empty()) return std::nullopt;
  return row_json(r[0]);
}

nlohmann::json unfinished(pqxx::connection& conn, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params("SELECT " + kStatusColumns +
                                            " WHERE id IN (SELECT id FROM jobhost.batches WHERE state IN ('open', "
                                            "'closed') ORDER BY created_at DESC LIMIT $1) ORDER BY created_at DESC",
                                        limit)) {
    out.push_back(row_json(row));
  }
  return out;
}

CancelResult cancel(pqxx::connection& conn, const std::string& id, long long& cancelled) {
  if (!admin::is_uuid(id)) throw std::invalid_argument("id: not a UUID: " + id);
  pqxx::work tx(conn);
  if (tx.exec_params("SELECT 1 FROM jobhost.batches WHERE id = $1::uuid", id).empty()) return CancelResult::kNotFound;
  const pqxx::row r = tx.exec_params1("SELECT jobhost.batch_cancel($1::uuid)", id);
  tx.commit();
  if (r[0].is_null()) return CancelResult::kAlreadyDone;
  cancelled = r[0].as<long long>();
  return CancelResult::kCancelled;
}

}  // namespace jobhost::batches
