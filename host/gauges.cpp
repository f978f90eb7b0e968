// gauges.cpp: pool gauges from the pools, queue gauges from admin::queues.
#include "gauges.hpp"

#include <spdlog/spdlog.h>

#include "admin.hpp"
#include "flow_dispatch.hpp"
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
    m.clear("queue_paused");
    m.clear("flow_active_keys");
    std::vector<std::string> keyed;
    for (const auto& q : queues) {
      const std::string name = q["name"];
      m.set("queue_paused", {{"queue", name}}, q["paused"].get<bool>() ? 1 : 0);
      if (q["keyed"].get<bool>()) keyed.push_back(name);
      for (const char* band : {"high", "normal", "low"}) {
        m.set("queue_depth", {{"queue", name}, {"priority", band}}, q["waiting"][band].get<double>());
      }
      m.set("dlq_size", {{"queue", name}}, q[std::string(to_text(JobState::kFailed))].get<double>());
    }
    if (!keyed.empty()) {
      flow_.redis().with([&](Redis& r) {
        for (const auto& name : keyed) {
          m.set("flow_active_keys", {{"queue", name}},
                static_cast<double>(active_keys(r, QueueKeys(flow_.prefix(), name))));
        }
        return 0;
      });
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
