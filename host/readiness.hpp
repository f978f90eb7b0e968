// readiness.hpp: what GET /readyz answers. A thread of its own checks
// PostgreSQL and Redis once a second; the probe reads the last result, so it
// answers at once however slow the servers or the rest of the API are.
#pragma once

#include <chrono>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "pg.hpp"

namespace jobhost {

class Readiness {
 public:
  static constexpr std::chrono::milliseconds kInterval{1000};
  // A result older than this says the check itself hangs: not ready.
  static constexpr std::chrono::milliseconds kStale{3000};

  Readiness(std::string postgres_url, std::string redis_url);
  ~Readiness();
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  // Checks once (so the first probe has an answer), then keeps checking.
  void start();
  void stop();

  struct Answer {
    int status;  // 200 or 503
    nlohmann::json body;
  };
  // Never waits on I/O.
  Answer answer() const;

 private:
  void check();

  PgPool pg_;  // one connection, replaced when it breaks
  std::string redis_url_;
  mutable std::mutex mu_;
  nlohmann::json last_;
  bool ready_ = false;
  std::chrono::steady_clock::time_point checked_at_{};
  std::jthread thread_;
};

}  // namespace jobhost
