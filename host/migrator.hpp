// migrator.hpp: moves ready jobs from PostgreSQL into Redis priority lists.
//
// Claims batches with FOR UPDATE SKIP LOCKED, so any number of migrators can
// run against one database without handing out a job twice. Woken by NOTIFY
// on insert; otherwise sleeps until the next run_at or poll_interval_ms.
// Only queues that a running worker host serves are migrated: jobs of an
// unknown type stay queued until a plugin for them appears.
#pragma once

#include <stop_token>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "redis.hpp"

namespace jobhost {

class Migrator {
 public:
  explicit Migrator(const Config& config);
  void run(std::stop_token stop);

  // One pass over every served queue. Returns the number of jobs moved;
  // sets *full when some queue had more ready than one batch, and
  // *next_due_ms to the wait until the earliest future run_at (or -1).
  size_t pass(pqxx::connection& conn, Redis& redis, bool* full, long long* next_due_ms);

 private:
  size_t migrate_queue(pqxx::connection& conn, Redis& redis, const std::string& queue, bool* full);

  Config config_;
};

// Names of queues served by some live worker host.
std::vector<std::string> served_queues(pqxx::connection& conn);

}  // namespace jobhost
