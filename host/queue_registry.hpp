// queue_registry.hpp: queue registration. A worker host marks the queues its
// plugins serve as live in jobhost.job_queues (served_at, and the plugin's
// max_attempts as the queue's default): at start-up, after a reload, and every
// kRefreshPeriod from the housekeeping loop. Migrators only move jobs of queues
// served within the last 30 seconds, so jobs of a type no host serves wait in
// PostgreSQL (invariant 6).
#pragma once

#include <chrono>

#include <pqxx/pqxx>

#include "pool_set.hpp"

namespace jobhost {

class QueueRegistry {
 public:
  static constexpr std::chrono::seconds kRefreshPeriod{10};

  explicit QueueRegistry(const PoolSet& pools) : pools_(pools) {}

  // Registers the job types of the active pools and wakes the migrators, so
  // jobs that waited for a plugin move at once. Throws on database errors.
  void register_now(pqxx::connection& conn) const;

 private:
  const PoolSet& pools_;
};

}  // namespace jobhost
