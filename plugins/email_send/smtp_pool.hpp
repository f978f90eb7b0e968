// smtp_pool.hpp: a bounded pool of open SMTP sessions to one relay, shared by
// the plugin's workers.
//
//  - at most max_sessions open at once (lent out + idle); a worker that finds
//    none free waits, up to the relay's timeout_ms;
//  - checkout hands out the most recently used idle session that passes the
//    health check (the relay has not closed it nor spoken out of turn, idle
//    for less than max_idle_ms), and opens a new one otherwise;
//  - a session goes back only when its last transaction left it usable and it
//    has carried fewer than max_messages; any other is closed (a session that
//    failed mid-transaction is never reused);
//  - sweep() closes sessions idle longer than max_idle_ms (the plugin calls it
//    about once a second).
// Thread-safe.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "smtp_session.hpp"

namespace smtp_client {

struct PoolLimits {
  int max_sessions = 16;
  int max_messages = 1000;
  long max_idle_ms = 30000;
};

class SessionPool {
 public:
  SessionPool(Endpoint endpoint, PoolLimits limits) : endpoint_(std::move(endpoint)), limits_(limits) {}
  ~SessionPool();
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // A session lent to one worker; back to the pool (or closed) when the lease
  // ends, as give_back() decided.
  class Lease {
   public:
    Lease() = default;
    Lease(SessionPool* pool, std::unique_ptr<Session> s) : pool_(pool), session_(std::move(s)) {}
    Lease(Lease&& o) noexcept : pool_(o.pool_), session_(std::move(o.session_)), reusable_(o.reusable_) { o.pool_ = nullptr; }
    Lease& operator=(Lease&& o) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { release(); }
    Session* operator->() { return session_.get(); }
    explicit operator bool() const { return session_ != nullptr; }
    // Whether the session may carry another message (false by default).
    void reusable(bool yes) { reusable_ = yes; }

   private:
    void release();
    SessionPool* pool_ = nullptr;
    std::unique_ptr<Session> session_;
    bool reusable_ = false;
  };

  // A healthy idle session or a new one. Throws std::runtime_error when no
  // slot frees up within timeout_ms, or when opening fails (why, quoted).
  // fresh: skip the idle ones (after a kept session turned out stale).
  Lease checkout(bool fresh = false);
  void sweep();

  // Sessions opened since start, for the benchmark and the tests.
  long opened() const;
  const Endpoint& endpoint() const { return endpoint_; }

 private:
  void give_back(std::unique_ptr<Session> s, bool reusable);

  const Endpoint endpoint_;
  const PoolLimits limits_;
  mutable std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Session>> idle_;  // most recently used last
  int open_ = 0;                                // idle + lent out + being opened
  long opened_ = 0;
};

}  // namespace smtp_client
