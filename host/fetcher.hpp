// fetcher.hpp: moves jobs from a plugin's Redis lists into its worker pool.
//
// Takes only as many ids as the pool has free workers, leases them in
// PostgreSQL in one statement (counting the attempt), validates the payload
// with the plugin, and hands them over. Ids whose lease fails (taken, reset,
// or PostgreSQL down) stay 'migrated_to_redis' and the reconciler recovers them.
// A lease that committed but whose answer was lost (the connection broke in
// between) is given back by the lease keeper (WorkerPool::lease_answer_lost).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config.hpp"
#include "flow_dispatch.hpp"
#include "routing.hpp"
#include "service.hpp"

namespace jobhost {

class WorkerPool;

class Fetcher : public Service {
 public:
  Fetcher(WorkerPool& pool, const Config& config, std::vector<std::string> queues);

 private:
  // Waits for a free worker, then takes, leases and hands over one batch.
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  // One fetch from one queue under its limits, syncing its pause state first
  // if due; the slots of `release` are given back in the same round trip.
  FlowFetch fetch(size_t queue, const FlowConfig& flow, size_t max, const std::vector<KeyedId>& release = {});
  // The slots of the attempts that ended since last asked, by queue.
  std::map<std::string, std::vector<KeyedId>> slots_to_give_back();
  // Gives them back, in one round trip per queue.
  void give_back_slots(const std::map<std::string, std::vector<KeyedId>>& by_queue);

  WorkerPool& pool_;
  std::string worker_id_;
  int64_t lease_ms_;
  std::vector<QueueKeys> queues_;
  std::vector<std::string> queue_names_;
  std::string key_prefix_;
  size_t next_queue_ = 0;
};

}  // namespace jobhost
