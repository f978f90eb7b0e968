// notify_wait.hpp: waiting for NOTIFY jobhost_jobs (the migrator's wake-up) on
// a connection of its own, so that postgres.url may go through a
// transaction-mode pooler, where a LISTEN issued on a pooled connection is
// heard by whichever client holds that server connection next, or by nobody.
//
// The connection goes to postgres.listen_url when set; else to postgres.url
// unless postgres.pooler is "transaction", in which case there is nothing to
// LISTEN on and wait() simply sleeps: the migrator polls every
// host.migrator.poll_interval_ms (the host says so in its log at start).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <pqxx/pqxx>

#include "config.hpp"

namespace jobhost {

// Where the host LISTENs: "" when it must poll.
std::string listen_url_for(const Config& config);

class NotifyWait {
 public:
  explicit NotifyWait(std::string url);
  ~NotifyWait();
  NotifyWait(const NotifyWait&) = delete;
  NotifyWait& operator=(const NotifyWait&) = delete;

  // LISTENs now if not yet (call before looking at the queues, so nothing
  // notified after the look is missed). Throws std::runtime_error when
  // PostgreSQL cannot be reached; the next call tries again.
  void listen();
  // Waits up to `timeout` for a notification; true when one came. A broken
  // connection is dropped (and reopened by the next listen()) and reported
  // as a wake-up, so the caller looks again rather than sleeping on it.
  bool wait(std::chrono::milliseconds timeout);
  // Discards notifications already received.
  void drain();
  // Closes the connection; the next listen() opens a new one.
  void reset();
  bool polling() const { return url_.empty(); }

 private:
  struct Receiver;
  std::string url_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<Receiver> receiver_;
};

}  // namespace jobhost
