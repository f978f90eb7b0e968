// fetcher.cpp: Redis → lease → validate → worker pool.
#include "fetcher.hpp"

#include <thread>

#include <spdlog/spdlog.h>

#include "dispatch.hpp"
#include "lease.hpp"
#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr auto kIdleWait = std::chrono::milliseconds(500);
constexpr auto kErrorPause = std::chrono::milliseconds(200);
// Per lease statement; larger batches amortize the commit under load.
constexpr size_t kMaxLeaseBatch = 500;

}  // namespace

Fetcher::Fetcher(WorkerPool& pool, const Config& config, std::vector<std::string> queues)
    : pool_(pool),
      redis_url_(config.redis_url),
      pg_url_(config.postgres_url),
      worker_id_(config.host_id + "/" + pool.name()),
      lease_ms_(config.lease_duration_ms),
      queue_names_(std::move(queues)) {
  for (const auto& q : queue_names_) queues_.emplace_back(config.redis_key_prefix, q);
}

void Fetcher::run(std::stop_token stop) {
  Redis redis(redis_url_);
  std::unique_ptr<pqxx::connection> pg;
  size_t next_queue = 0;
  int failures = 0;
  while (!stop.stop_requested()) {
    const size_t free = pool_.wait_for_capacity(stop, kIdleWait);
    if (free == 0) continue;
    try {
      // Round-robin over the plugin's queues; within one, high before normal before low.
      std::vector<std::string> ids;
      for (size_t i = 0; i < queues_.size() && ids.empty(); ++i) {
        ids = pop_jobs(redis, queues_[next_queue], std::min(free, kMaxLeaseBatch));
        next_queue = (next_queue + 1) % queues_.size();
      }
      if (ids.empty()) {
        wait_for_jobs(redis, queues_, kIdleWait);
        continue;
      }
      if (!pg || !pg->is_open()) pg = pg_connect(pg_url_);
      for (LeasedJob& job : lease_jobs(*pg, ids, worker_id_, lease_ms_)) {
        if (std::string bad = pool_.plugin().validate(job.type, job.payload); !bad.empty()) {
          pool_.settle_without_running(std::move(job), OutcomeKind::kFailed,
                                       "invalid payload: " + bad);
          continue;
        }
        pool_.hand_over(std::move(job));
      }
      if (failures > 0) spdlog::info("fetcher {}: Redis and PostgreSQL reachable again", worker_id_);
      failures = 0;
    } catch (const std::exception& e) {
      // Ids popped but not leased stay 'migrated_to_redis' in PostgreSQL; the
      // reconciler pushes them again. Nothing is lost.
      if (failures++ % 25 == 0) spdlog::warn("fetcher {}: {}; retrying", worker_id_, e.what());
      pg.reset();
      redis.reset();
      std::this_thread::sleep_for(kErrorPause);
    }
  }
}

}  // namespace jobhost
