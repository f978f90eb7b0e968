// api_host.cpp: see api_host.hpp.
#include "api_host.hpp"

#include <regex>
#include <sstream>
#include <stdexcept>

namespace jobhost::test {

ApiProcess::ApiProcess(TestDb& db, HostOptions o, const std::string& api_yaml, const std::string& tag) {
  if (o.roles.find("api") == std::string::npos) throw std::logic_error("ApiProcess: roles must include api");
  o.extra_yaml += "api:\n  listen: \"127.0.0.1:0\"\n" + api_yaml;
  host_ = start_host(write_config(db, o, tag), tag);
  std::smatch m;
  const std::string log = host_->log();
  if (!std::regex_search(log, m, std::regex("api listening on 127\\.0\\.0\\.1:([0-9]+)"))) {
    throw std::runtime_error("the host did not say where its api listens:\n" + log);
  }
  port_ = std::stoi(m[1]);
}

httplib::Client ApiProcess::client() const {
  httplib::Client c("127.0.0.1", port_);
  c.set_read_timeout(20, 0);
  return c;
}

httplib::Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

std::optional<double> metric_value(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

}  // namespace jobhost::test
