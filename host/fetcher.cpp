// fetcher.cpp: Redis → lease → validate → worker pool.
#include "fetcher.hpp"

#include <algorithm>

#include "dispatch.hpp"
#include "lease.hpp"
#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr auto kIdleWait = std::chrono::milliseconds(500);
// Per lease statement; larger batches amortize the commit under load.
constexpr size_t kMaxLeaseBatch = 500;

}  // namespace

Fetcher::Fetcher(WorkerPool& pool, const Config& config, std::vector<std::string> queues)
    : Service({.name = "fetcher " + config.host_id + "/" + pool.name(),
               .postgres_url = config.postgres_url,
               .redis_url = config.redis_url,
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = std::chrono::milliseconds(200),
               .max_backoff = std::chrono::milliseconds(2000)}),
      pool_(pool),
      worker_id_(config.host_id + "/" + pool.name()),
      lease_ms_(config.lease_duration_ms),
      queue_names_(std::move(queues)) {
  for (const auto& q : queue_names_) queues_.emplace_back(config.redis_key_prefix, q);
}

// Ids popped but not leased (a failure in between) stay 'migrated_to_redis'
// in PostgreSQL; the reconciler pushes them again. Nothing is lost.
std::chrono::milliseconds Fetcher::run_once(std::stop_token stop) {
  const size_t free = pool_.wait_for_capacity(stop, kIdleWait);
  if (free == 0) return std::chrono::milliseconds(0);
  // Round-robin over the plugin's queues; within one, high before normal before low.
  std::vector<std::string> ids;
  for (size_t i = 0; i < queues_.size() && ids.empty(); ++i) {
    ids = pop_jobs(redis(), queues_[next_queue_], std::min(free, kMaxLeaseBatch));
    next_queue_ = (next_queue_ + 1) % queues_.size();
  }
  if (ids.empty()) {
    wait_for_jobs(redis(), queues_, kIdleWait);
    return std::chrono::milliseconds(0);
  }
  for (LeasedJob& job : lease_jobs(pg(), ids, worker_id_, lease_ms_)) {
    if (std::string bad = pool_.plugin().validate(job.type, job.payload); !bad.empty()) {
      pool_.settle_without_running(std::move(job), outcome_for(AttemptEnd::kFailedPermanently, false),
                                   "invalid payload: " + bad);
      continue;
    }
    pool_.hand_over(std::move(job));
  }
  return std::chrono::milliseconds(0);
}

}  // namespace jobhost
