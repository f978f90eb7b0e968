// jobhost_plugins/pg_pool.hpp: a bounded pool of PostgreSQL connections for a
// plugin's worker threads. Header-only, shared by the plugins in this
// repository; a plugin built elsewhere needs only the SDK.
//
//   PgPool pool(settings, 4);            // settings.database_url, settings.db_pool_size (default 4)
//   auto conn = pool.acquire();          // blocks while all are lent out
//   pqxx::work tx(*conn);  ...  tx.commit();
//
// A connection found broken is dropped instead of returned, so the next
// acquire() opens a fresh one: a PostgreSQL restart costs the attempts that were
// using it, not the plugin.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/pqxx>

#include <jobhost_plugins/settings.hpp>

namespace jobhost_plugins {

class PgPool {
 public:
  PgPool(std::string url, int size) : url_(std::move(url)), size_(size) {
    if (url_.empty()) throw std::invalid_argument("settings.database_url: must not be empty");
    if (size_ < 1) throw std::invalid_argument("settings.db_pool_size: must be at least 1");
  }
  // From the plugin's settings database_url (required) and db_pool_size
  // (default_size when absent, 1 to 1000).
  PgPool(const SettingsReader& settings, int default_size)
      : PgPool(settings.required_string("database_url"),
               static_cast<int>(settings.integer("db_pool_size", default_size, 1, 1000))) {}
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // A connection lent to one caller; returned to the pool when it goes out of
  // scope, unless it broke.
  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<pqxx::connection> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), conn_(std::move(o.conn_)) { o.pool_ = nullptr; }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr) pool_->give_back(std::move(conn_));
    }
    pqxx::connection& operator*() { return *conn_; }
    pqxx::connection* operator->() { return conn_.get(); }

   private:
    PgPool* pool_;
    std::unique_ptr<pqxx::connection> conn_;
  };

  // Throws pqxx::broken_connection when PostgreSQL cannot be reached: to a
  // handler that is a retryable failure naming the cause.
  Lease acquire() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < size_; });
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn));
    }
    ++open_;
    lock.unlock();
    try {
      return Lease(this, std::make_unique<pqxx::connection>(url_));
    } catch (...) {
      lock.lock();
      --open_;
      cv_.notify_one();
      throw;
    }
  }

  const std::string& url() const { return url_; }

 private:
  void give_back(std::unique_ptr<pqxx::connection> conn) {
    std::lock_guard lock(mu_);
    if (conn && conn->is_open()) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
    }
    cv_.notify_one();
  }

  const std::string url_;
  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;
};

}  // namespace jobhost_plugins
