// jobhost_plugins/enqueue.hpp: follow-up jobs enqueued inside the caller's
// own transaction, so they exist exactly when the caller's other writes
// commit (an import's or an export's completion). The SDK's
// Job::enqueue commits on its own, apart from them; these do not.
//
// The one place the plugins of this repository call jobhost.enqueue (the
// schema's producer API, sql/001_core.sql); they never insert into
// jobhost.jobs themselves. A statement that builds a whole batch of payloads
// server-side calls jobhost.enqueue_many inside itself instead
// (campaign_process's fan-out page): handing the batch back through the
// client would cost a round trip and the payloads' bytes twice per page.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace jobhost_plugins {

struct FollowUp {
  int priority = 100;  // <= 50 the high band, 51-150 normal, > 150 low
  // A second enqueue under the same key (and type) stores nothing and finds
  // the first job: a retried attempt does not enqueue twice.
  std::optional<std::string> unique_key;
};

// One job; returns its id (the first job's, when unique_key found one).
inline std::string enqueue(pqxx::work& tx, const std::string& type, const nlohmann::json& payload,
                           const FollowUp& how = {}) {
  return tx
      .exec_params1("SELECT jobhost.enqueue($1, $2::jsonb, priority => $3, unique_key => $4)", type,
                    payload.dump(), how.priority, how.unique_key)[0]
      .c_str();
}

}  // namespace jobhost_plugins
