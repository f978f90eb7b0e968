// migrations.cpp: applying the embedded migrations once each.
#include "migrations.hpp"

#include <pqxx/pqxx>

namespace jobhost {
namespace {

constexpr const char* kCreateLedger = R"sql(
CREATE SCHEMA IF NOT EXISTS jobhost;
CREATE TABLE IF NOT EXISTS jobhost.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
))sql";

// Arbitrary but fixed: the key of the advisory lock held while migrating.
constexpr long long kMigrationLockKey = 0x6a6f62686f7374;  // "jobhost"

}  // namespace

int schema_version(pqxx::connection& conn) {
  pqxx::work tx(conn);
  const auto exists = tx.exec1("SELECT to_regclass('jobhost.schema_migrations') IS NOT NULL")[0];
  if (!exists.as<bool>()) return 0;
  return tx.exec1("SELECT coalesce(max(version), 0) FROM jobhost.schema_migrations")[0].as<int>();
}

// Each step takes the lock for its own transaction (pg_advisory_xact_lock), so
// that migrating works through a transaction-mode pooler too: a session lock
// taken and released in separate statements there may land on different
// server connections and never be released.
std::vector<std::string> migrate(pqxx::connection& conn) {
  const std::string lock = "SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLockKey) + ")";
  std::vector<std::string> applied;
  {
    pqxx::work tx(conn);
    tx.exec(lock);
    tx.exec(kCreateLedger);
    tx.commit();
  }
  for (const Migration& m : kMigrations) {
    pqxx::work tx(conn);
    tx.exec(lock);
    const auto done = tx.exec_params("SELECT 1 FROM jobhost.schema_migrations WHERE version = $1", m.version);
    if (!done.empty()) continue;
    tx.exec(m.sql);
    tx.exec_params("INSERT INTO jobhost.schema_migrations (version, name) VALUES ($1, $2)", m.version,
                   std::string(m.name));
    tx.commit();
    applied.emplace_back(m.name);
  }
  return applied;
}

}  // namespace jobhost
