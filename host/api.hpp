// api.hpp: the `api` role: the admin HTTP API, /metrics, health and readiness.
//
// Reads are open to whoever can reach api.listen (loopback by default); every
// write needs `Authorization: Bearer <api.token>`: 401 without one, 403 with a
// wrong one, and 403 for all writes when no token is configured. Errors are
// JSON {"error": "...", "field": "..."} with the field named when one is at
// fault. Bodies over 1 MiB get 413; a client that stalls is dropped after
// 5 s; a handler that throws gets 500 and the host carries on.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "config.hpp"

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
};

class ApiServer {
 public:
  ApiServer(const Config& config, ApiHooks hooks);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds api.listen (port 0 picks a free port) and serves on a thread of its
  // own. Throws std::runtime_error when the address cannot be bound.
  void start();
  void stop();
  int port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace jobhost
