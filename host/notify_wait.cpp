// notify_wait.cpp: see notify_wait.hpp.
#include "notify_wait.hpp"

#include <thread>

#include <spdlog/spdlog.h>

#include "pg.hpp"

namespace jobhost {

struct NotifyWait::Receiver : pqxx::notification_receiver {
  explicit Receiver(pqxx::connection_base& c) : pqxx::notification_receiver(c, "jobhost_jobs") {}
  void operator()(const std::string&, int) override {}
};

std::string listen_url_for(const Config& config) {
  if (!config.postgres_listen_url.empty()) return config.postgres_listen_url;
  return config.behind_transaction_pooler() ? std::string() : config.postgres_url;
}

NotifyWait::NotifyWait(std::string url) : url_(std::move(url)) {}

NotifyWait::~NotifyWait() {
  receiver_.reset();  // before the connection it listens on
}

void NotifyWait::listen() {
  if (polling() || conn_) return;
  conn_ = pg_connect(url_);
  receiver_ = std::make_unique<Receiver>(*conn_);
  conn_->get_notifs();  // libpqxx issues the LISTEN here, on its own connection
}

bool NotifyWait::wait(std::chrono::milliseconds timeout) {
  if (!conn_) {
    std::this_thread::sleep_for(timeout);
    return false;
  }
  try {
    const auto ms = timeout.count();
    return conn_->await_notification(ms / 1000, (ms % 1000) * 1000) > 0;
  } catch (const pqxx::broken_connection& e) {
    spdlog::warn("migrator: the LISTEN connection to {} broke ({}); listening again on the next pass",
                 redact_url(url_), e.what());
    reset();
    return true;
  }
}

void NotifyWait::drain() {
  if (!conn_) return;
  try {
    conn_->get_notifs();
  } catch (const pqxx::broken_connection&) {
    reset();
  }
}

void NotifyWait::reset() {
  receiver_.reset();
  conn_.reset();
}

}  // namespace jobhost
