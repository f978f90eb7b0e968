// readiness.cpp: see readiness.hpp.
#include "readiness.hpp"

#include <memory>

#include "redis.hpp"
#include "stop_sleep.hpp"

namespace jobhost {

Readiness::Readiness(std::string postgres_url, std::string redis_url)
    : pg_(std::move(postgres_url), 1), redis_url_(std::move(redis_url)) {}

Readiness::~Readiness() { stop(); }

void Readiness::start() {
  check();
  thread_ = std::jthread([this](std::stop_token st) {
    while (sleep_unless_stopped(st, kInterval)) check();
  });
}

void Readiness::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  thread_.join();
}

void Readiness::check() {
  nlohmann::json body;
  bool ready = true;
  try {
    pg_.with([](pqxx::connection& c) { return pqxx::nontransaction(c).exec("SELECT 1").size(); });
    body["postgres"] = "ok";
  } catch (const std::exception& e) {
    body["postgres"] = e.what();
    ready = false;
  }
  try {
    Redis redis(redis_url_, std::chrono::seconds(2));
    redis.command({"PING"});
    body["redis"] = "ok";
  } catch (const std::exception& e) {
    body["redis"] = e.what();
    ready = false;
  }
  body["status"] = ready ? "ready" : "not ready";
  std::lock_guard lock(mu_);
  last_ = std::move(body);
  ready_ = ready;
  checked_at_ = std::chrono::steady_clock::now();
}

Readiness::Answer Readiness::answer() const {
  std::lock_guard lock(mu_);
  const auto age = std::chrono::steady_clock::now() - checked_at_;
  if (age > kStale) {
    nlohmann::json body = last_;
    body["status"] = "not ready";
    body["error"] = "the last check of PostgreSQL and Redis finished " +
                    std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(age).count()) +
                    " ms ago; one of them does not answer";
    return {503, body};
  }
  return {ready_ ? 200 : 503, last_};
}

}  // namespace jobhost
