// fetcher.cpp: Redis → lease → validate → worker pool.
#include "fetcher.hpp"

#include <algorithm>
#include <map>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "dispatch.hpp"
#include "flow_dispatch.hpp"
#include "lease.hpp"
#include "metrics.hpp"
#include "pause.hpp"
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
               .max_backoff = std::chrono::milliseconds(2000),
               .hot_path = true}),
      pool_(pool),
      worker_id_(config.host_id + "/" + pool.name()),
      lease_ms_(config.lease_duration_ms),
      queue_names_(std::move(queues)),
      key_prefix_(config.redis_key_prefix) {
  for (const auto& q : queue_names_) queues_.emplace_back(config.redis_key_prefix, q);
}

FlowFetch Fetcher::fetch(size_t queue, const FlowConfig& flow, size_t max, const std::vector<KeyedId>& release) {
  const QueueKeys& keys = queues_[queue];
  const FlowConfig* f = flow.enabled ? &flow : nullptr;
  FlowFetch got = pop_flow(redis(), keys, f, max, lease_ms_, release);
  if (got.status == FlowFetch::Status::kNeedsPauseSync) {
    refresh_pause(pg(), redis(), keys, queue_names_[queue]);
    got = pop_flow(redis(), keys, f, max, lease_ms_);
  }
  Metrics& m = Metrics::global();
  for (const auto& [limit, n] : got.throttled) {
    m.inc("flow_throttled_total", {{"queue", queue_names_[queue]}, {"limit", limit}}, static_cast<double>(n));
  }
  return got;
}

// Ids popped but not leased (a failure in between) stay 'migrated_to_redis'
// in PostgreSQL; the reconciler pushes them again. Nothing is lost.
std::map<std::string, std::vector<KeyedId>> Fetcher::slots_to_give_back() {
  std::map<std::string, std::vector<KeyedId>> by_queue;
  for (auto& r : pool_.take_slot_releases()) by_queue[r.queue].push_back(std::move(r.job));
  return by_queue;
}

void Fetcher::give_back_slots(const std::map<std::string, std::vector<KeyedId>>& by_queue) {
  for (const auto& [queue, jobs] : by_queue) release_slots(redis(), QueueKeys(key_prefix_, queue), jobs);
}

std::chrono::milliseconds Fetcher::run_once(std::stop_token stop) {
  const size_t free = pool_.wait_for_capacity(stop, kIdleWait);
  // Slots of workers that ended go back with the fetch of their queue.
  auto to_give_back = slots_to_give_back();
  if (free == 0) {
    give_back_slots(to_give_back);
    return std::chrono::milliseconds(0);
  }
  const std::shared_ptr<const FlowConfig> flow = pool_.flow();
  // Round-robin over the plugin's queues; within one, high before normal
  // before low, and keys in turn.
  FlowFetch got;
  size_t from = 0;
  long long retry_ms = -1;
  for (size_t i = 0; i < queues_.size() && got.jobs.empty(); ++i) {
    from = next_queue_;
    const auto mine = to_give_back.find(queue_names_[from]);
    if (mine == to_give_back.end()) {
      got = fetch(from, *flow, std::min(free, kMaxLeaseBatch));
    } else {
      got = fetch(from, *flow, std::min(free, kMaxLeaseBatch), mine->second);
      to_give_back.erase(mine);
    }
    if (got.retry_in_ms >= 0 && (retry_ms < 0 || got.retry_in_ms < retry_ms)) retry_ms = got.retry_in_ms;
    next_queue_ = (next_queue_ + 1) % queues_.size();
  }
  give_back_slots(to_give_back);
  if (got.jobs.empty()) {
    // A limit that frees itself with time (a rate, a slot that lapses) is
    // looked at again then; a slot given back or a resume wakes us at once.
    const auto wait = retry_ms >= 0 ? std::min(kIdleWait, std::chrono::milliseconds(std::max(1LL, retry_ms))) : kIdleWait;
    // While we wait on Redis, workers give their slots back themselves.
    pool_.set_fetcher_idle(true);
    try {
      give_back_slots(slots_to_give_back());
      wait_for_jobs(redis(), queues_, wait);
    } catch (...) {
      pool_.set_fetcher_idle(false);
      throw;
    }
    pool_.set_fetcher_idle(false);
    return std::chrono::milliseconds(0);
  }
  const bool slots = flow->enabled && flow->counts_running();
  std::vector<std::string> ids;
  std::unordered_map<std::string, std::string> key_of;
  ids.reserve(got.jobs.size());
  for (const auto& j : got.jobs) {
    ids.push_back(j.id);
    if (slots) key_of.emplace(j.id, j.key);
  }
  std::vector<LeasedJob> leased;
  try {
    leased = lease_jobs(pg(), ids, worker_id_, lease_ms_);
  } catch (...) {
    pool_.lease_answer_lost();  // it may have committed (WorkerPool::lease_answer_lost)
    throw;
  }
  if (slots) {
    for (LeasedJob& job : leased) {
      auto it = key_of.find(job.id);
      job.slot_key = it->second;
      key_of.erase(it);
    }
    // Taken from Redis but not leased (cancelled, or leased elsewhere after a
    // reconciler push): their slots go back now rather than when they lapse.
    if (!key_of.empty()) {
      std::vector<KeyedId> unused;
      for (auto& [id, key] : key_of) unused.push_back({id, key});
      release_slots(redis(), queues_[from], unused);
    }
  }
  pool_.take_leased(std::move(leased));
  return std::chrono::milliseconds(0);
}

}  // namespace jobhost
