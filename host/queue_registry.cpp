// queue_registry.cpp: the registration statement.
#include "queue_registry.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "job_state.hpp"
#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

// Also records each queue's flow: block (whether it is keyed, fair, and the
// key's path), and returns the queues that just became keyed or changed
// their key's path: their waiting jobs need keys.
constexpr const char* kRegisterSql = R"sql(
WITH t AS (
  SELECT * FROM unnest($1::text[], $2::int[], $3::bool[], $4::bool[], $5::text[])
      AS t(name, max_attempts, keyed, fair, path)
), old AS (
  SELECT q.name, q.flow_keyed, q.flow_key_path FROM jobhost.job_queues q JOIN t USING (name)
), up AS (
  INSERT INTO jobhost.job_queues AS q (name, default_max_attempts, served_at, flow_keyed, flow_fair, flow_key_path)
  SELECT name, max_attempts, now(), keyed, fair,
         CASE WHEN path <> '' THEN ARRAY(SELECT jsonb_array_elements_text(path::jsonb)) END
    FROM t
  ON CONFLICT (name) DO UPDATE
     SET served_at = now(), default_max_attempts = excluded.default_max_attempts,
         flow_keyed = excluded.flow_keyed, flow_fair = excluded.flow_fair, flow_key_path = excluded.flow_key_path
  RETURNING q.name, q.flow_keyed, q.flow_key_path
)
SELECT up.name FROM up LEFT JOIN old USING (name)
 WHERE up.flow_keyed
   AND (old.name IS NULL OR NOT old.flow_keyed OR old.flow_key_path IS DISTINCT FROM up.flow_key_path))sql";

// Jobs waiting in PostgreSQL that were written before their queue was keyed.
const std::string kBackfillSql = state_sql(R"sql(
UPDATE jobhost.jobs j
   SET flow_key = jobhost.flow_key_for(true, q.flow_key_path, j.payload, NULL)
  FROM jobhost.job_queues q
 WHERE q.name = $1 AND j.queue_name = q.name AND j.flow_key IS NULL AND j.status IN ({ready}))sql");

std::string path_json(const FlowConfig& f) {
  if (!f.enabled || f.key_path.empty()) return "";
  return nlohmann::json(f.key_path).dump();
}

}  // namespace

void QueueRegistry::register_now(pqxx::connection& conn) const {
  PgArray names, attempts, keyed, fair, paths;
  bool any = false;
  for (const auto& p : pools_.active()) {
    const auto flow = p->flow();
    for (const auto& t : p->plugin().job_types()) {
      names.add(t);
      attempts.add(p->plugin().retry().max_attempts);
      keyed.add(flow->enabled ? "true" : "false");
      fair.add(flow->enabled && flow->fair ? "true" : "false");
      paths.add(path_json(*flow));
      any = true;
    }
  }
  if (!any) return;
  pqxx::work tx(conn);
  for (const auto& row : tx.exec_params(kRegisterSql, names.str(), attempts.str(), keyed.str(), fair.str(), paths.str())) {
    const auto n = tx.exec_params(kBackfillSql, row[0].c_str()).affected_rows();
    if (n > 0) spdlog::info("queue {} is now dispatched by flow key: gave keys to {} waiting jobs", row[0].c_str(), n);
  }
  tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
}

}  // namespace jobhost
