// api.hpp: the `api` role: the admin HTTP API, /metrics, health and readiness.
//
// Who may call what is access.hpp's: probes open; /metrics open unless
// api.metrics_token is set; reads open unless a read token is configured;
// every write needs `Authorization: Bearer <write token>` (api.token or an
// api.tokens entry with role write): 401 without one, 403 with a wrong one,
// and 403 for all writes when no write token is configured. Every write is
// recorded in jobhost.audit_log under the token's name (audit.hpp). Errors are
// JSON {"error": "...", "field": "..."} with the field named when one is at
// fault; a handler that throws gets 500 and the host carries on. Connection
// and rate limits, timeouts and the body limit are HttpServer's (api.* in the
// config); /healthz and /readyz are answered there without waiting, also on
// api.health_listen when it is set.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "flow.hpp"

namespace jobhost {

// What the API asks of the host it runs in.
struct ApiHooks {
  // The plugins loaded here: [{name, version, job_types, pool_size, busy, ...}].
  std::function<nlohmann::json()> plugins;
  // A served type's payload check: nullopt when this host does not serve the
  // type, "" when the payload is fine, else the plugin's message.
  std::function<std::optional<std::string>(const std::string& type, const std::string& payload)> validate;
  // Called before /metrics renders, to refresh the gauges.
  std::function<void()> refresh_gauges;
  // A queue's flow: block as this host serves it; nullopt when it does not.
  std::function<std::optional<FlowConfig>(const std::string& queue)> flow;
};

class ApiServer {
 public:
  ApiServer(const Config& config, ApiHooks hooks);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds api.listen and api.health_listen (port 0 picks a free port) and
  // serves on threads of its own. Throws std::runtime_error when an address
  // cannot be bound.
  void start();
  void stop();
  int port() const { return port_; }
  int health_port() const { return health_port_; }  // 0: no api.health_listen

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  int health_port_ = 0;
  bool started_ = false;
};

}  // namespace jobhost
