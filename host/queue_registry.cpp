// queue_registry.cpp: the registration statement.
#include "queue_registry.hpp"

#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr const char* kRegisterSql = R"sql(
INSERT INTO jobhost.job_queues AS q (name, default_max_attempts, served_at)
SELECT name, max_attempts, now() FROM unnest($1::text[], $2::int[]) AS t(name, max_attempts)
ON CONFLICT (name) DO UPDATE
   SET served_at = now(), default_max_attempts = excluded.default_max_attempts)sql";

}  // namespace

void QueueRegistry::register_now(pqxx::connection& conn) const {
  PgArray names;
  PgArray attempts;
  for (const auto& p : pools_.active()) {
    for (const auto& t : p->plugin().job_types()) {
      names.add(t);
      attempts.add(p->plugin().retry().max_attempts);
    }
  }
  if (names.empty()) return;
  pqxx::work tx(conn);
  tx.exec_params(kRegisterSql, names.str(), attempts.str());
  tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
}

}  // namespace jobhost
