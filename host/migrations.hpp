// migrations.hpp: the SQL migrations compiled into the binaries, and applying them.
#pragma once

#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace jobhost {

struct Migration {
  int version;
  const char* name;
  const char* sql;
};

// Generated from sql/*.sql (host/embed_sql.cmake), in version order.
extern const std::vector<Migration> kMigrations;

// Applies every migration not yet recorded in jobhost.schema_migrations, each in
// its own transaction, under an advisory lock so concurrent callers serialize.
// Returns the names applied (empty when already up to date).
std::vector<std::string> migrate(pqxx::connection& conn);

// The highest applied version, 0 when none.
int schema_version(pqxx::connection& conn);

}  // namespace jobhost
