// api_host.hpp: a real jobhost serving the admin API on a free loopback port,
// for the tests of metrics, access control, job search and PgBouncer.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <httplib.h>

#include "harness.hpp"

namespace jobhost::test {

class ApiProcess {
 public:
  // Starts a host with o.roles (which must include api) and `api_yaml` as the
  // inside of its api: block (listen is set here).
  ApiProcess(TestDb& db, HostOptions o, const std::string& api_yaml, const std::string& tag = "api");

  httplib::Client client() const;
  int port() const { return port_; }
  Process& process() { return *host_; }

 private:
  std::unique_ptr<Process> host_;
  int port_ = 0;
};

// Bearer header for a token.
httplib::Headers bearer(const std::string& token);

// The value of one series in a Prometheus text exposition, e.g.
// series = "queue_lag_seconds{queue=\"noop\",priority=\"normal\"}"; nullopt when absent.
std::optional<double> metric_value(const std::string& exposition, const std::string& series);

}  // namespace jobhost::test
