// lease_keeper.cpp: timeouts, heartbeats and the queue registration refresh.
#include "lease_keeper.hpp"

#include <spdlog/spdlog.h>

#include "lease.hpp"
#include "pg.hpp"
#include "stop_sleep.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr auto kSupervisePeriod = std::chrono::milliseconds(100);

}  // namespace

void LeaseKeeper::run(std::stop_token stop) {
  std::unique_ptr<pqxx::connection> conn;
  auto next_heartbeat = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.heartbeat_ms);
  auto next_register = std::chrono::steady_clock::now() + QueueRegistry::kRefreshPeriod;
  int failures = 0;
  while (sleep_unless_stopped(stop, kSupervisePeriod)) {
    const auto pools = pools_.all();
    for (auto& pool : pools) pool->supervise();
    const auto now = std::chrono::steady_clock::now();
    if (now < next_heartbeat && now < next_register) continue;
    try {
      if (!conn || !conn->is_open()) conn = pg_connect(config_.postgres_url);
      if (now >= next_heartbeat) {
        std::vector<std::pair<std::string, int>> held;
        for (auto& pool : pools) pool->held_leases(held);
        const LeaseCheck check = extend_leases(*conn, held, config_.lease_duration_ms);
        if (!check.lost.empty()) {
          spdlog::warn("{} leases were lost (expired and reaped); cancelling those attempts", check.lost.size());
          for (auto& pool : pools) pool->cancel(check.lost);
        }
        if (!check.cancel_requested.empty()) {
          for (const auto& id : check.cancel_requested) spdlog::info("job {}: cancellation requested; asking its handler to stop", id);
          for (auto& pool : pools) pool->cancel(check.cancel_requested);
        }
        next_heartbeat = now + std::chrono::milliseconds(config_.heartbeat_ms);
      }
      if (now >= next_register) {
        registry_.register_now(*conn);
        next_register = now + QueueRegistry::kRefreshPeriod;
      }
      failures = 0;
    } catch (const std::exception& e) {
      if (failures++ % 25 == 0) spdlog::warn("housekeeping: {}; retrying", e.what());
      conn.reset();
    }
  }
}

}  // namespace jobhost
