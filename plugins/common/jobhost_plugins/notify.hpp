// jobhost_plugins/notify.hpp: tells a tenant that something finished, inside
// the caller's transaction: one app.notifications row, and one webhook.dispatch
// job per active webhook endpoint of the tenant.
//
// Idempotent: a retried attempt that notifies again adds nothing. The row is
// unique per (tenant, kind, subject) and each job carries the unique key
// "<event_id>/<endpoint_id>", so an endpoint gets one delivery per event.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <jobhost_plugins/enqueue.hpp>

namespace jobhost_plugins {

// kind is the event name too ("import.completed"); subject_id the job or row it
// is about. Webhook jobs go in at priority 10, the high band: the seeds run
// webhooks ahead of bulk work. Returns the number of endpoints notified (a job
// left by an earlier attempt counts, as the unique key finds it).
inline int notify(pqxx::work& tx, const std::string& tenant_id, const std::string& kind,
                  const std::string& subject_id, const nlohmann::json& data) {
  tx.exec_params(
      "INSERT INTO app.notifications (tenant_id, kind, subject_id, data) VALUES ($1, $2, $3, $4::jsonb) "
      "ON CONFLICT (tenant_id, kind, subject_id) DO NOTHING",
      tenant_id, kind, subject_id, data.dump());
  const std::string event_id = kind + ":" + subject_id;
  const pqxx::result endpoints = tx.exec_params(
      "SELECT id FROM app.webhook_endpoints WHERE tenant_id = $1 AND active ORDER BY id", tenant_id);
  for (const auto& row : endpoints) {
    const std::string endpoint = row[0].c_str();
    enqueue(tx, "webhook.dispatch",
            {{"tenant_id", tenant_id},
             {"endpoint_id", endpoint},
             {"event", kind},
             {"event_id", event_id},
             {"data", data}},
            {10, event_id + "/" + endpoint});
  }
  return static_cast<int>(endpoints.size());
}

}  // namespace jobhost_plugins
