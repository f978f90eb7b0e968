// audit.cpp: writing and reading jobhost.audit_log (see audit.hpp).
#include "audit.hpp"

namespace jobhost::audit {
namespace {

constexpr const char* kInsertSql =
    "INSERT INTO jobhost.audit_log (actor, action, target, count, detail) VALUES ($1, $2, $3, $4, $5::jsonb)";

constexpr const char* kRecentSql = R"sql(
SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), actor, action, target, count, detail::text
  FROM jobhost.audit_log ORDER BY id DESC LIMIT $1)sql";

}  // namespace

void record(pqxx::transaction_base& tx, const Entry& e) {
  const nlohmann::json detail = e.detail.is_object() ? e.detail : nlohmann::json::object();
  tx.exec_params(kInsertSql, e.actor, e.action, e.target, e.count,
                 detail.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void record(pqxx::connection& conn, const Entry& e) {
  pqxx::nontransaction tx(conn);
  record(tx, e);
}

nlohmann::json recent(pqxx::connection& conn, int limit) {
  pqxx::nontransaction tx(conn);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& row : tx.exec_params(kRecentSql, limit)) {
    out.push_back({{"id", row[0].as<long long>()},
                   {"at", row[1].c_str()},
                   {"actor", row[2].c_str()},
                   {"action", row[3].c_str()},
                   {"target", row[4].c_str()},
                   {"count", row[5].as<long long>()},
                   {"detail", nlohmann::json::parse(row[6].c_str())}});
  }
  return out;
}

}  // namespace jobhost::audit
