// reloader.cpp: what a new config changes, checked before anything changes.
#include "reloader.hpp"

#include <map>

#include <spdlog/spdlog.h>

#include "metrics.hpp"
#include "pg.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

// Everything of a plugin entry but its sizing: a change here needs a new
// instance (new library, types, retry, timeout or settings).
bool same_instance(const PluginConfig& a, const PluginConfig& b) {
  return a.library == b.library && a.job_types == b.job_types && a.retry.max_attempts == b.retry.max_attempts &&
         a.retry.base_ms == b.retry.base_ms && a.retry.max_ms == b.retry.max_ms && a.timeout_ms == b.timeout_ms &&
         a.settings_json == b.settings_json;
}

bool same_sizing(const PluginConfig& a, const PluginConfig& b) {
  return a.concurrency_min == b.concurrency_min && a.concurrency_max == b.concurrency_max && a.scaling == b.scaling &&
         a.scaling_queue_depth_above == b.scaling_queue_depth_above &&
         a.scaling_memory_percent_above == b.scaling_memory_percent_above && a.scaling_idle_ms == b.scaling_idle_ms &&
         a.flow == b.flow;
}

// Settings a running host keeps until it restarts.
std::vector<std::string> restart_only_changes(const Config& a, const Config& b) {
  std::vector<std::string> out;
  const auto check = [&](bool same, const char* what) {
    if (!same) out.emplace_back(what);
  };
  check(a.postgres_url == b.postgres_url && a.postgres_pool_size == b.postgres_pool_size &&
            a.postgres_listen_url == b.postgres_listen_url && a.postgres_pooler == b.postgres_pooler,
        "postgres");
  check(a.redis_url == b.redis_url && a.redis_key_prefix == b.redis_key_prefix, "redis");
  check(a.migrator_batch_size == b.migrator_batch_size && a.migrator_poll_interval_ms == b.migrator_poll_interval_ms &&
            a.migrator_max_in_redis == b.migrator_max_in_redis,
        "host.migrator");
  check(a.lease_duration_ms == b.lease_duration_ms && a.heartbeat_ms == b.heartbeat_ms, "host.lease");
  check(a.api_listen == b.api_listen && a.api_health_listen == b.api_health_listen && a.api_token == b.api_token &&
            a.api_access == b.api_access && a.api_limits == b.api_limits,
        "api");
  check(a.shutdown_grace_ms == b.shutdown_grace_ms, "host.shutdown_grace_ms");
  bool same_schedules = a.schedules.size() == b.schedules.size();
  for (size_t i = 0; same_schedules && i < a.schedules.size(); ++i) {
    same_schedules = a.schedules[i].job_type == b.schedules[i].job_type && a.schedules[i].cron == b.schedules[i].cron &&
                     a.schedules[i].payload_json == b.schedules[i].payload_json;
  }
  check(same_schedules, "schedules");
  return out;
}

}  // namespace

void Reloader::reload() {
  Metrics& metrics = Metrics::global();
  const auto reject = [&](const std::string& why) {
    spdlog::error("SIGHUP: reload rejected, the running configuration stays: {}", why);
    metrics.inc("config_reloads_total", {{"result", "rejected"}});
  };
  Config next;
  try {
    next = load_config(running_.file);
  } catch (const std::exception& e) {
    return reject(e.what());
  }
  if (const auto fixed = restart_only_changes(running_, next); !fixed.empty()) {
    spdlog::warn("SIGHUP: changes to {} take effect only after a restart", fmt::join(fixed, ", "));
  }
  if (!(running_.limiters == next.limiters)) {
    flow_.set_limiters(next.limiters);
    running_.limiters = next.limiters;
    spdlog::info("SIGHUP: limiters changed: acquires use the new limits from now on");
  }
  if (!running_.has_role(Role::kWorker)) {
    spdlog::info("SIGHUP: reload applied (no worker role: no plugins to change)");
    metrics.inc("config_reloads_total", {{"result", "applied"}});
    return;
  }

  std::map<std::string, std::shared_ptr<WorkerPool>> running;
  for (const auto& pool : pools_.active()) running[pool->name()] = pool;
  std::vector<std::shared_ptr<WorkerPool>> next_pools, started, retire;
  std::vector<std::pair<std::shared_ptr<WorkerPool>, PluginConfig>> resized;
  std::vector<std::string> added, replaced, removed, resized_names;
  try {
    for (size_t i = 0; i < next.plugins.size(); ++i) {
      const PluginConfig& pc = next.plugins[i];
      const auto old = running.find(pc.name);
      if (old != running.end() && same_instance(old->second->plugin_config(), pc) &&
          old->second->plugin().source() == library_identity(pc.library.string())) {
        next_pools.push_back(old->second);
        if (!same_sizing(old->second->plugin_config(), pc)) {
          resized.emplace_back(old->second, pc);
          resized_names.push_back(pc.name);
        }
        running.erase(old);
        continue;
      }
      std::shared_ptr<WorkerPool> fresh;
      try {
        fresh = make_pool_(pc);
      } catch (const PluginError& e) {
        throw PluginError(next.file.string() + ":" + std::to_string(pc.line) + ": plugins[" + std::to_string(i) +
                          "]: " + e.what());
      }
      next_pools.push_back(fresh);
      started.push_back(fresh);
      if (old != running.end()) {
        retire.push_back(old->second);
        replaced.push_back(pc.name);
        running.erase(old);
      } else {
        added.push_back(pc.name);
      }
    }
  } catch (const PluginError& e) {
    return reject(e.what());  // the pools made so far were never started: dropping them unloads them
  }
  for (auto& [name, pool] : running) {
    retire.push_back(pool);
    removed.push_back(name);
  }

  for (auto& [pool, pc] : resized) pool->set_sizing(pc);
  for (auto& pool : started) pool->start();
  pools_.replace(next_pools, retire);
  try {
    auto conn = pg_connect(running_.postgres_url);
    registry_.register_now(*conn);
  } catch (const std::exception& e) {
    spdlog::warn("SIGHUP: new job types will be registered at the next refresh: {}", e.what());
  }
  next.roles = running_.roles;  // --roles, and roles need a restart anyway
  running_.plugins = next.plugins;
  spdlog::info("SIGHUP: reload applied: added [{}], replaced [{}], removed [{}], resized [{}]", fmt::join(added, ", "),
               fmt::join(replaced, ", "), fmt::join(removed, ", "), fmt::join(resized_names, ", "));
  metrics.inc("config_reloads_total", {{"result", "applied"}});
}

}  // namespace jobhost
