// autoscaler.cpp: grow on depth, stop at the memory threshold, shrink when idle.
#include "autoscaler.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "metrics.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

constexpr std::chrono::milliseconds kPeriod(1000);

std::optional<long long> read_number(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    return std::stoll(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<long long> meminfo_kb(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  long long value = 0;
  std::string unit;
  while (in >> name >> value >> unit) {
    if (name == key + ":") return value;
  }
  return std::nullopt;
}

}  // namespace

std::optional<double> memory_used_percent() {
  // cgroup v2: the process's own group, as /proc/self/cgroup names it.
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    const std::string dir = "/sys/fs/cgroup" + line.substr(3);
    const auto limit = read_number(dir + "/memory.max");
    const auto used = read_number(dir + "/memory.current");
    if (limit && used && *limit > 0) return 100.0 * static_cast<double>(*used) / static_cast<double>(*limit);
  }
  const auto total = meminfo_kb("MemTotal");
  const auto available = meminfo_kb("MemAvailable");
  if (!total || !available || *total <= 0) return std::nullopt;
  return 100.0 * static_cast<double>(*total - *available) / static_cast<double>(*total);
}

Autoscaler::Autoscaler(const Config& config, std::function<std::vector<std::shared_ptr<WorkerPool>>()> pools)
    : Service({.name = "autoscaler",
               .postgres_url = {},
               .redis_url = config.redis_url,
               .first_pass_after = kPeriod,
               .backoff = kPeriod,
               .max_backoff = std::chrono::seconds(5)}),
      config_(config),
      pools_(std::move(pools)) {}

long long Autoscaler::depth(Redis& redis, const WorkerPool& pool) const {
  for (const auto& type : pool.plugin().job_types()) {
    const QueueKeys keys(config_.redis_key_prefix, type);
    for (Band b : kBandsInFetchOrder) redis.append({"LLEN", keys.list(b)});
  }
  long long total = 0;
  for (size_t i = 0; i < pool.plugin().job_types().size() * kBandsInFetchOrder.size(); ++i) {
    const Reply r = redis.get_reply();
    if (r->type == REDIS_REPLY_INTEGER) total += r->integer;
  }
  return total;
}

void Autoscaler::tick(Redis& redis, std::chrono::steady_clock::time_point now) {
  for (const auto& pool : pools_()) {
    const PluginConfig pc = pool->plugin_config();
    if (!pc.scaling) continue;
    const long long waiting = depth(redis, *pool);
    const long long threshold = pc.scaling_queue_depth_above.value_or(0);
    const bool signal = waiting > threshold;
    Metrics::global().set("plugin_scale_up", {{"plugin", pc.name}}, signal ? 1 : 0);
    const size_t range = static_cast<size_t>(std::max(1, pc.concurrency_max - pc.concurrency_min));
    const size_t step = std::max<size_t>(1, (range + 3) / 4);
    const size_t size = pool->target_size();
    if (waiting > 0 || pool->busy() > 0 || !busy_at_.count(pc.name)) busy_at_[pc.name] = now;

    if (signal && size < static_cast<size_t>(pc.concurrency_max)) {
      if (pc.scaling_memory_percent_above) {
        const auto used = memory_used_percent();
        if (used && *used > *pc.scaling_memory_percent_above) {
          if (!memory_blocked_[pc.name]) {
            spdlog::warn("pool {}: not growing past {} workers: memory use {:.1f}% is above "
                         "scaling.memory_percent_above {}%", pc.name, size, *used, *pc.scaling_memory_percent_above);
          }
          memory_blocked_[pc.name] = true;
          continue;
        }
      }
      memory_blocked_[pc.name] = false;
      const size_t grown = pool->resize(size + step);
      spdlog::info("pool {}: {} -> {} workers (queue depth {} > {})", pc.name, size, grown, waiting, threshold);
    } else if (!signal && size > static_cast<size_t>(std::max(1, pc.concurrency_min)) &&
               now - busy_at_[pc.name] >= std::chrono::milliseconds(pc.scaling_idle_ms)) {
      const size_t shrunk = pool->resize(size > step ? size - step : 1);
      spdlog::info("pool {}: {} -> {} workers (idle for {} ms)", pc.name, size, shrunk, pc.scaling_idle_ms);
      busy_at_[pc.name] = now;  // one step per idle_ms
    }
  }
}

std::chrono::milliseconds Autoscaler::run_once(std::stop_token) {
  tick(redis(), std::chrono::steady_clock::now());
  return kPeriod;
}

}  // namespace jobhost
