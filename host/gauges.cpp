// gauges.cpp: pool gauges from the pools, queue gauges from admin::queues.
#include "gauges.hpp"

#include <spdlog/spdlog.h>

#include "admin.hpp"
#include "job_state.hpp"
#include "metrics.hpp"
#include "queue_signals.hpp"
#include "worker_pool.hpp"

namespace jobhost {

void Gauges::refresh() {
  Metrics& m = Metrics::global();
  for (const auto& pool : pools_.active()) {
    const Metrics::Labels plugin{{"plugin", pool->name()}};
    m.set("plugin_pool_size", plugin, static_cast<double>(pool->size()));
    m.set("jobs_in_flight", plugin, static_cast<double>(pool->busy()));
  }
  try {
    const nlohmann::json queues = pg_.with([](pqxx::connection& c) { return admin::queues(c); });
    m.clear("queue_depth");
    m.clear("dlq_size");
    for (const auto& q : queues) {
      const std::string name = q["name"];
      for (const char* band : {"high", "normal", "low"}) {
        m.set("queue_depth", {{"queue", name}, {"priority", band}}, q["waiting"][band].get<double>());
      }
      m.set("dlq_size", {{"queue", name}}, q[std::string(to_text(JobState::kFailed))].get<double>());
    }
  } catch (const std::exception& e) {
    spdlog::warn("metrics: queue depths not refreshed: {}", e.what());
  }
  try {
    pg_.with([&m](pqxx::connection& c) {
      refresh_queue_signals(c, m);
      return 0;
    });
  } catch (const std::exception& e) {
    spdlog::warn("metrics: queue lag and ready work not refreshed: {}", e.what());
  }
}

}  // namespace jobhost
