// migrator.hpp: moves ready jobs from PostgreSQL into Redis priority lists.
//
// Claims batches with FOR UPDATE SKIP LOCKED, so any number of migrators can
// run against one database without handing out a job twice. Woken by NOTIFY
// on insert; otherwise sleeps until the next run_at or poll_interval_ms.
// Only queues that a running worker host serves are migrated: jobs of an
// unknown type stay queued until a plugin for them appears. Redis holds a
// bounded window of each queue (host.migrator.max_in_redis); the backlog
// beyond it waits in PostgreSQL and is claimed high band first, so Redis
// memory does not grow with the backlog and priorities hold across it.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "notify_wait.hpp"
#include "redis.hpp"
#include "service.hpp"

namespace jobhost {

class Migrator : public Service {
 public:
  explicit Migrator(const Config& config);
  ~Migrator() override;

  struct PassResult {
    size_t moved = 0;
    bool full = false;         // some queue had more ready than one batch
    bool window_full = false;  // some queue has max_in_redis ids waiting in Redis
    long long next_due_ms = -1;  // wait until the earliest future run_at, or -1
  };

  // One pass over every served queue.
  PassResult pass(pqxx::connection& conn, Redis& redis);

 private:
  // One pass, then the wait for a NOTIFY, the next run_at or poll_interval_ms.
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  void pg_dropping() override;
  size_t migrate_queue(pqxx::connection& conn, Redis& redis, const std::string& queue, PassResult& res);

  Config config_;
  NotifyWait wake_;  // LISTEN jobhost_jobs, on a connection of its own (notify_wait.hpp)
  std::unordered_map<std::string, long long> waiting_;  // per queue, last seen in Redis
};

// Names of queues served by some live worker host.
std::vector<std::string> served_queues(pqxx::connection& conn);

}  // namespace jobhost
