// lease_keeper.cpp: timeouts, heartbeats and the queue registration refresh.
#include "lease_keeper.hpp"

#include <spdlog/spdlog.h>

#include <map>

#include "flow_dispatch.hpp"
#include "lease.hpp"
#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr auto kSupervisePeriod = std::chrono::milliseconds(100);

}  // namespace

// The watchdog must keep its cadence while PostgreSQL is down, so a failure
// backs off no further than the next supervise.
LeaseKeeper::LeaseKeeper(const Config& config, const PoolSet& pools, const QueueRegistry& registry,
                         FlowRuntime& flow, Completer& completer)
    : Service({.name = "housekeeping",
               .postgres_url = config.postgres_url,
               .redis_url = {},
               .first_pass_after = kSupervisePeriod,
               .backoff = kSupervisePeriod,
               .max_backoff = kSupervisePeriod}),
      pools_(pools),
      registry_(registry),
      flow_(flow),
      completer_(completer),
      host_id_(config.host_id),
      key_prefix_(config.redis_key_prefix),
      heartbeat_(config.heartbeat_ms),
      lease_ms_(config.lease_duration_ms),
      next_heartbeat_(std::chrono::steady_clock::now() + heartbeat_),
      next_register_(std::chrono::steady_clock::now() + QueueRegistry::kRefreshPeriod) {}

// The concurrency slots of the jobs held go on as long as their leases do.
void LeaseKeeper::extend_slots_of(const std::vector<HeldLease>& held) {
  std::map<std::string, std::vector<KeyedId>> by_queue;
  for (const auto& h : held) {
    if (h.slot_key) by_queue[h.queue].push_back({h.id, *h.slot_key});
  }
  if (by_queue.empty()) return;
  try {
    flow_.redis().with([&](Redis& r) {
      for (const auto& [queue, jobs] : by_queue) extend_slots(r, QueueKeys(key_prefix_, queue), jobs, lease_ms_);
      return 0;
    });
  } catch (const std::exception& e) {
    spdlog::warn("concurrency slots of {} queues not extended: {}", by_queue.size(), e.what());
  }
}

void LeaseKeeper::give_back_unanswered(pqxx::connection& conn, WorkerPool& pool) {
  const int64_t lost_at = pool.lease_answer_lost_at();
  std::map<std::string, Seen>& seen = unanswered_[pool.name()];
  if (lost_at == 0 && seen.empty()) return;
  const auto began = std::chrono::steady_clock::now();
  // The pool's attempts first, then the completer's: an attempt that ends
  // in between is in the second.
  std::unordered_set<std::string> attempts;
  pool.attempt_ids(attempts);
  completer_.pending_ids(attempts);
  const auto found = unanswered_leases(conn, host_id_ + "/" + pool.name(), attempts);
  std::map<std::string, Seen> again;
  std::vector<Outcome> back;
  for (const RunningLease& l : found) {
    const auto it = seen.find(l.id);
    const bool same = it != seen.end() && it->second.lease.attempt == l.attempt && it->second.lease.expires == l.expires;
    if (!same) {
      again.emplace(l.id, Seen{l, began});
    } else if (began - it->second.at > heartbeat_ + kSupervisePeriod) {
      const int64_t now = now_us();
      back.push_back({l.id, l.attempt, OutcomeKind::kHandBack, 0, {}, now, now});
    } else {
      again.emplace(l.id, it->second);
    }
  }
  seen = std::move(again);
  if (!back.empty()) {
    spdlog::warn("{}: {} jobs were leased by a statement whose answer was lost; giving them back (no attempt used)",
                 pool.name(), back.size());
    for (auto& o : back) completer_.submit(std::move(o));
  }
  // Done once a look finds nothing that began long enough after the last
  // failure to see every job that failure may have leased.
  const auto since_lost = began.time_since_epoch() - std::chrono::steady_clock::duration(lost_at);
  if (found.empty() && since_lost > 2 * kUnansweredLeaseAge) pool.forget_lease_answer_lost(lost_at);
}

std::chrono::milliseconds LeaseKeeper::run_once(std::stop_token) {
  const auto pools = pools_.all();
  for (auto& pool : pools) pool->supervise();
  const auto now = std::chrono::steady_clock::now();
  bool unanswered = false;
  if (now >= next_unanswered_) {
    for (auto& pool : pools) unanswered = unanswered || pool->lease_answer_lost_at() != 0;
    for (const auto& [_, seen] : unanswered_) unanswered = unanswered || !seen.empty();
  }
  if (now < next_heartbeat_ && now < next_register_ && !unanswered) return kSupervisePeriod;
  pqxx::connection& conn = pg();
  if (unanswered) {
    for (auto& pool : pools) give_back_unanswered(conn, *pool);
    next_unanswered_ = now + kUnansweredLeaseAge;
  }
  if (now >= next_heartbeat_) {
    std::vector<HeldLease> held;
    for (auto& pool : pools) pool->held_leases(held);
    const LeaseCheck check = extend_leases(conn, held, lease_ms_);
    extend_slots_of(held);
    if (!check.lost.empty()) {
      spdlog::warn("{} leases were lost (expired and reaped); cancelling those attempts", check.lost.size());
      for (auto& pool : pools) pool->cancel(check.lost);
    }
    if (!check.cancel_requested.empty()) {
      for (const auto& id : check.cancel_requested) spdlog::info("job {}: cancellation requested; asking its handler to stop", id);
      for (auto& pool : pools) pool->cancel(check.cancel_requested);
    }
    next_heartbeat_ = now + heartbeat_;
  }
  if (now >= next_register_) {
    registry_.register_now(conn);
    next_register_ = now + QueueRegistry::kRefreshPeriod;
  }
  return kSupervisePeriod;
}

}  // namespace jobhost
