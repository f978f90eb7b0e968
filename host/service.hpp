// service.hpp: the shape every long-running loop of the host shares, after
// River's start-stop services: connect what the loop needs, run one pass, and
// on a failure log it once per streak, back off (doubling, with a cap), drop
// the connections so the next pass reconnects, and stop when the
// std::stop_token asks. When the loop works again it says so once, with the
// number of failed passes and how long the streak lasted.
//
// The fetcher, migrator, completer, reaper, reconciler, autoscaler, scheduler
// and the housekeeping loop (LeaseKeeper) are services. The base costs a pass
// nothing beyond a virtual call and two branches: no allocation, no lock, no
// clock read, no log line, no wake-up.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include <pqxx/pqxx>

#include "redis.hpp"

namespace jobhost {

class Service {
 public:
  struct Options {
    std::string name;          // in log lines: "reaper", "fetcher host-1/noop"
    std::string postgres_url;  // empty: the loop never calls pg()
    std::string redis_url;     // empty: the loop never calls redis()
    // A wait before the first pass (a loop that starts by sleeping).
    std::chrono::milliseconds first_pass_after{0};
    // The pause after the first failure of a streak, doubled after each
    // further one up to max_backoff.
    std::chrono::milliseconds backoff{200};
    std::chrono::milliseconds max_backoff{2000};
    // Runs hot-path statements: its connection is set up by hot_path_session (pg.hpp).
    bool hot_path = false;
  };

  explicit Service(Options options);
  virtual ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Runs passes until stop is requested. Never throws; blocks the calling
  // thread (give it a std::jthread of its own).
  void run(std::stop_token stop);

  const std::string& name() const { return options_.name; }

 protected:
  // One pass. Returns how long to wait before the next one (zero: at once);
  // the wait ends early when stop is requested. A pass may block on its own
  // wake-up (NOTIFY, a condition variable, BLPOP) if it notices stop within
  // about a second. Throws to report a failure.
  virtual std::chrono::milliseconds run_once(std::stop_token stop) = 0;

  // Called once as run() begins; false ends run() at once (nothing to do).
  virtual bool start_up() { return true; }

  // The loop's connections, opened on first use and after a failure, so a
  // pass that does not reach a server does not connect to it. Throw on
  // connection errors (std::runtime_error naming the server, RedisError).
  pqxx::connection& pg();
  Redis& redis();

  // State tied to one PostgreSQL connection (a LISTEN receiver): built after
  // pg() opens a connection, destroyed before the connection is dropped.
  virtual void pg_connected(pqxx::connection&) {}
  virtual void pg_dropping() {}

  // What a failure holds up, for its log line ("3 outcomes not written yet").
  virtual std::string failure_context() const { return {}; }

 private:
  // Logs the first failure of a streak, drops the connections; returns the pause.
  std::chrono::milliseconds failed(const std::exception& e);
  void recovered();
  void drop_pg();

  Options options_;
  std::unique_ptr<pqxx::connection> pg_;
  std::optional<Redis> redis_;
  int failures_ = 0;  // failed passes in the current streak
  std::chrono::steady_clock::time_point failing_since_;
};

// The pause after the nth failed pass in a row (n >= 1): backoff, doubled for
// each failure after the first, never more than max_backoff.
std::chrono::milliseconds backoff_after(int failures, const Service::Options& o);

}  // namespace jobhost
