// pause.cpp: the pause statements.
#include "pause.hpp"

#include <stdexcept>

#include "flow_dispatch.hpp"

namespace jobhost {

PauseState load_pause(pqxx::connection& conn, const std::string& queue) {
  pqxx::nontransaction tx(conn);
  PauseState out;
  const pqxx::result r = tx.exec_params(R"sql(
SELECT true, NULL FROM jobhost.job_queues WHERE name = $1 AND paused_at IS NOT NULL
UNION ALL
SELECT false, flow_key FROM jobhost.paused_keys WHERE queue_name = $1)sql",
                                        queue);
  for (const auto& row : r) {
    if (row[0].as<bool>()) out.queue_paused = true;
    else out.paused_keys.emplace_back(row[1].c_str());
  }
  return out;
}

void refresh_pause(pqxx::connection& conn, Redis& redis, const QueueKeys& keys, const std::string& queue) {
  const PauseState s = load_pause(conn, queue);
  sync_pause(redis, keys, s.queue_paused, s.paused_keys);
}

bool set_paused(pqxx::connection& conn, const std::string& queue, const std::optional<std::string>& key, bool paused) {
  pqxx::work tx(conn);
  if (!key) {
    // The row exists once anything was enqueued or served; pausing an unknown queue creates it.
    const pqxx::result r = tx.exec_params(R"sql(
INSERT INTO jobhost.job_queues AS q (name, paused_at) VALUES ($1, CASE WHEN $2 THEN now() END)
ON CONFLICT (name) DO UPDATE
   SET paused_at = CASE WHEN $2 THEN coalesce(q.paused_at, now()) END
 WHERE (q.paused_at IS NOT NULL) <> $2
RETURNING 1)sql",
                                          queue, paused);
    tx.commit();
    return !r.empty();
  }
  const pqxx::result q = tx.exec_params("SELECT flow_keyed FROM jobhost.job_queues WHERE name = $1", queue);
  if (q.empty() || !q[0][0].as<bool>()) {
    throw std::invalid_argument("queue '" + queue +
                                "' is not dispatched by key (its plugin has no flow: block, or no host has "
                                "served it yet): pause the whole queue, or configure flow.key first");
  }
  const pqxx::result r =
      paused ? tx.exec_params("INSERT INTO jobhost.paused_keys (queue_name, flow_key) VALUES ($1, $2) "
                              "ON CONFLICT DO NOTHING RETURNING 1",
                              queue, *key)
             : tx.exec_params("DELETE FROM jobhost.paused_keys WHERE queue_name = $1 AND flow_key = $2 RETURNING 1",
                              queue, *key);
  tx.commit();
  return !r.empty();
}

}  // namespace jobhost
