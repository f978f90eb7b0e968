// host.cpp: start-up checks, role threads, housekeeping and shutdown.
#include "host.hpp"

#include <signal.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "admin.hpp"
#include "api.hpp"
#include "autoscaler.hpp"
#include "completer.hpp"
#include "job_context.hpp"
#include "metrics.hpp"
#include "lease.hpp"
#include "migrations.hpp"
#include "migrator.hpp"
#include "pg.hpp"
#include "reaper.hpp"
#include "reconciler.hpp"
#include "redis.hpp"
#include "scheduler.hpp"
#include "stop_sleep.hpp"
#include "worker_pool.hpp"

namespace jobhost {
namespace {

constexpr auto kSupervisePeriod = std::chrono::milliseconds(100);
constexpr auto kRegisterPeriod = std::chrono::seconds(10);

// Marks the queues this host serves as live, with their default max_attempts,
// and wakes migrators so jobs that waited for a plugin move at once.
constexpr const char* kRegisterSql = R"sql(
INSERT INTO jobhost.job_queues AS q (name, default_max_attempts, served_at)
SELECT name, max_attempts, now() FROM unnest($1::text[], $2::int[]) AS t(name, max_attempts)
ON CONFLICT (name) DO UPDATE
   SET served_at = now(), default_max_attempts = excluded.default_max_attempts)sql";

void register_queues(pqxx::connection& conn, const std::vector<std::shared_ptr<WorkerPool>>& pools) {
  PgArray names;
  PgArray attempts;
  for (const auto& p : pools) {
    for (const auto& t : p->plugin().job_types()) {
      names.add(t);
      attempts.add(p->plugin().retry().max_attempts);
    }
  }
  if (names.empty()) return;
  pqxx::work tx(conn);
  tx.exec_params(kRegisterSql, names.str(), attempts.str());
  tx.exec("SELECT pg_notify('jobhost_jobs', '')");
  tx.commit();
}

}  // namespace

struct Host::Parts {
  std::unique_ptr<PgPool> pg_pool;
  std::unique_ptr<Completer> completer;
  std::vector<std::shared_ptr<WorkerPool>> pools;
  std::vector<std::jthread> roles;  // migrator, reaper, reconciler
  std::jthread housekeeping;
  std::unique_ptr<ApiServer> api;

  // pools changes on reload; other threads take snapshots.
  mutable std::mutex pools_mu;
  std::vector<std::shared_ptr<WorkerPool>> retiring;  // replaced or removed, finishing their jobs
  std::vector<std::jthread> drainers;                 // one per retiring pool

  std::vector<std::shared_ptr<WorkerPool>> active() const {
    std::lock_guard lock(pools_mu);
    return pools;
  }
  // Active and retiring: both hold leases to extend and handlers to watch.
  std::vector<std::shared_ptr<WorkerPool>> all() const {
    std::lock_guard lock(pools_mu);
    auto out = pools;
    out.insert(out.end(), retiring.begin(), retiring.end());
    return out;
  }
};

std::string default_host_id() {
  char name[256] = {0};
  gethostname(name, sizeof name - 1);
  return std::string(name) + "-" + std::to_string(getpid());
}

void Host::block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Host::Host(Config config) : config_(std::move(config)), parts_(std::make_unique<Parts>()) {
  if (config_.host_id.empty()) config_.host_id = default_host_id();
}

Host::~Host() = default;

bool Host::has_abandoned_threads() const {
  for (const auto& p : parts_->all()) {
    if (p->abandoned_threads() > 0) return true;
  }
  return false;
}

namespace {

void check_redis(const Config& config) {
  try {
    Redis redis(config.redis_url);
    redis.command({"PING"});
    require_non_evicting(redis);
  } catch (const RedisError& e) {
    throw StartupError(e.what());
  }
}

void check_schema(const Config& config) {
  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = pg_connect(config.postgres_url);
  } catch (const std::exception& e) {
    throw StartupError(e.what());
  }
  const int have = schema_version(*conn);
  const int want = kMigrations.back().version;
  if (have < want) {
    throw StartupError("the database schema is at version " + std::to_string(have) +
                       " but this host needs version " + std::to_string(want) +
                       ": run `jobctl db migrate` first");
  }
  if (have > want) {
    throw StartupError("the database schema is at version " + std::to_string(have) +
                       ", newer than this host knows (" + std::to_string(want) +
                       "): upgrade jobhost");
  }
}

}  // namespace

int Host::run() {
  Parts& p = *parts_;
  std::string roles;
  for (Role r : config_.roles) roles += std::string(roles.empty() ? "" : ",") + role_name(r);
  spdlog::info("jobhost {} starting: roles={} config={}", config_.host_id, roles, config_.file.string());

  check_redis(config_);
  check_schema(config_);

  p.pg_pool = std::make_unique<PgPool>(config_.postgres_url, static_cast<size_t>(config_.postgres_pool_size));
  p.completer = std::make_unique<Completer>(config_.postgres_url);
  if (config_.has_role(Role::kWorker)) {
    for (size_t i = 0; i < config_.plugins.size(); ++i) {
      try {
        p.pools.push_back(make_pool(config_.plugins[i]));
      } catch (const PluginError& e) {
        throw StartupError(config_.file.string() + ":" + std::to_string(config_.plugins[i].line) + ": plugins[" +
                           std::to_string(i) + "]: " + e.what());
      }
    }
    auto conn = pg_connect(config_.postgres_url);
    register_queues(*conn, p.pools);
  }

  p.completer->start();
  for (auto& pool : p.pools) pool->start();
  if (config_.has_role(Role::kWorker)) {
    p.roles.emplace_back([a = Autoscaler(config_, [this] { return parts_->active(); })](
                             std::stop_token st) mutable { a.run(st); });
  }
  if (config_.has_role(Role::kMigrator)) {
    p.roles.emplace_back([m = Migrator(config_)](std::stop_token st) mutable { m.run(st); });
  }
  if (config_.has_role(Role::kReaper)) {
    p.roles.emplace_back([r = Reaper(config_)](std::stop_token st) mutable { r.run(st); });
    p.roles.emplace_back([r = Reconciler(config_)](std::stop_token st) mutable { r.run(st); });
  }
  if (config_.has_role(Role::kScheduler)) {
    p.roles.emplace_back([s = Scheduler(config_)](std::stop_token st) mutable { s.run(st); });
  }
  if (config_.has_role(Role::kApi)) {
    p.api = std::make_unique<ApiServer>(config_, api_hooks());
    try {
      p.api->start();
    } catch (const std::exception& e) {
      throw StartupError(e.what());
    }
  }
  p.housekeeping = std::jthread([this](std::stop_token st) { housekeeping(st); });
  spdlog::info("jobhost {} ready", config_.host_id);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGHUP) {
      reload();
      continue;
    }
    spdlog::info("{}: shutting down, grace {} ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 config_.shutdown_grace_ms);
    break;
  }
  return shutdown();
}

int Host::shutdown() {
  Parts& p = *parts_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.shutdown_grace_ms);
  if (p.api) p.api->stop();
  for (auto& t : p.roles) t.request_stop();
  const auto pools = p.all();
  for (auto& pool : pools) pool->stop_fetching();
  for (auto& pool : pools) pool->drain(deadline);
  for (auto& t : p.drainers) {
    if (t.joinable()) t.join();
  }
  p.housekeeping.request_stop();
  if (p.housekeeping.joinable()) p.housekeeping.join();
  for (auto& t : p.roles) {
    if (t.joinable()) t.join();
  }
  // However short the grace, give the last writes a few seconds.
  const auto left = std::max<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()),
      std::chrono::seconds(5));
  if (const size_t unwritten = p.completer->flush_and_stop(left); unwritten > 0) {
    spdlog::error("{} outcomes could not be written (PostgreSQL unreachable); their leases will "
                  "expire and the jobs will run again", unwritten);
  }
  spdlog::info("jobhost {} stopped", config_.host_id);
  return 0;
}

std::shared_ptr<WorkerPool> Host::make_pool(const PluginConfig& pc) {
  Parts& p = *parts_;
  std::shared_ptr<LoadedPlugin> plugin = LoadedPlugin::load(pc, host_api());
  spdlog::info("plugin {} {} loaded from {}: job types {}, {} workers, max_attempts {}", plugin->info().name,
               plugin->info().version, pc.library.string(), fmt::join(plugin->job_types(), ","),
               pc.scaling ? fmt::format("{}..{} (elastic)", pc.concurrency_min, pc.concurrency_max)
                          : std::to_string(pc.concurrency_max),
               plugin->retry().max_attempts);
  return std::make_shared<WorkerPool>(plugin, pc, config_, *p.completer, *p.pg_pool);
}

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
         a.scaling_memory_percent_above == b.scaling_memory_percent_above && a.scaling_idle_ms == b.scaling_idle_ms;
}

// Settings a running host keeps until it restarts.
std::vector<std::string> restart_only_changes(const Config& a, const Config& b) {
  std::vector<std::string> out;
  const auto check = [&](bool same, const char* what) {
    if (!same) out.emplace_back(what);
  };
  check(a.postgres_url == b.postgres_url && a.postgres_pool_size == b.postgres_pool_size, "postgres");
  check(a.redis_url == b.redis_url && a.redis_key_prefix == b.redis_key_prefix, "redis");
  check(a.migrator_batch_size == b.migrator_batch_size && a.migrator_poll_interval_ms == b.migrator_poll_interval_ms &&
            a.migrator_max_in_redis == b.migrator_max_in_redis,
        "host.migrator");
  check(a.lease_duration_ms == b.lease_duration_ms && a.heartbeat_ms == b.heartbeat_ms, "host.lease");
  check(a.api_listen == b.api_listen && a.api_health_listen == b.api_health_listen && a.api_token == b.api_token &&
            a.api_limits == b.api_limits,
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

// SIGHUP (DESIGN §5): re-read the YAML; if it is invalid, or a new or changed
// plugin cannot be loaded, nothing changes. Otherwise new plugins start,
// removed ones drain and unload, a plugin whose library (or instance
// settings) changed is replaced — new jobs go to the new pool at once, the
// old pool finishes its running jobs, hands back the ones it had not started,
// and is unloaded — and a pool whose sizing alone changed is resized in place.
// Jobs are never lost or run twice: a pool that stops fetching hands back its
// unstarted leases through the completer's attempt guard, as at shutdown.
void Host::reload() {
  Parts& p = *parts_;
  Metrics& metrics = Metrics::global();
  const auto reject = [&](const std::string& why) {
    spdlog::error("SIGHUP: reload rejected, the running configuration stays: {}", why);
    metrics.inc("config_reloads_total", {{"result", "rejected"}});
  };
  Config next;
  try {
    next = load_config(config_.file);
  } catch (const std::exception& e) {
    return reject(e.what());
  }
  if (const auto fixed = restart_only_changes(config_, next); !fixed.empty()) {
    spdlog::warn("SIGHUP: changes to {} take effect only after a restart", fmt::join(fixed, ", "));
  }
  if (!config_.has_role(Role::kWorker)) {
    spdlog::info("SIGHUP: reload applied (no worker role: no plugins to change)");
    metrics.inc("config_reloads_total", {{"result", "applied"}});
    return;
  }

  std::map<std::string, std::shared_ptr<WorkerPool>> running;
  for (const auto& pool : p.active()) running[pool->name()] = pool;
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
        fresh = make_pool(pc);
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
  {
    std::lock_guard lock(p.pools_mu);
    p.pools = next_pools;
    p.retiring.insert(p.retiring.end(), retire.begin(), retire.end());
  }
  for (auto& pool : retire) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(pool->plugin_config().timeout_ms) +
                          std::chrono::seconds(1);
    p.drainers.emplace_back([this, pool, deadline] {
      pool->drain(deadline, "the plugin was replaced or removed by a reload before the attempt finished");
      spdlog::info("plugin {} {}: drained after the reload; unloading it", pool->name(), pool->plugin().info().version);
      std::lock_guard lock(parts_->pools_mu);
      auto& r = parts_->retiring;
      r.erase(std::remove(r.begin(), r.end(), pool), r.end());
    });
  }
  try {
    auto conn = pg_connect(config_.postgres_url);
    register_queues(*conn, p.active());
  } catch (const std::exception& e) {
    spdlog::warn("SIGHUP: new job types will be registered at the next refresh: {}", e.what());
  }
  next.roles = config_.roles;  // --roles, and roles need a restart anyway
  config_.plugins = next.plugins;
  spdlog::info("SIGHUP: reload applied: added [{}], replaced [{}], removed [{}], resized [{}]", fmt::join(added, ", "),
               fmt::join(replaced, ", "), fmt::join(removed, ", "), fmt::join(resized_names, ", "));
  metrics.inc("config_reloads_total", {{"result", "applied"}});
}

ApiHooks Host::api_hooks() {
  ApiHooks hooks;
  hooks.plugins = [this] {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& pool : parts_->active()) {
      const LoadedPlugin& plugin = pool->plugin();
      out.push_back({{"name", plugin.info().name},
                     {"version", plugin.info().version},
                     {"job_types", plugin.job_types()},
                     {"pool_size", pool->size()},
                     {"busy", pool->busy()}});
    }
    return out;
  };
  hooks.validate = [this](const std::string& type, const std::string& payload) -> std::optional<std::string> {
    for (const auto& pool : parts_->active()) {
      const auto& types = pool->plugin().job_types();
      if (std::find(types.begin(), types.end(), type) != types.end()) return pool->plugin().validate(type, payload);
    }
    return std::nullopt;
  };
  hooks.refresh_gauges = [this] { refresh_gauges(); };
  return hooks;
}

// Gauges are snapshots: taken when /metrics is scraped, not kept up to date.
void Host::refresh_gauges() {
  Metrics& m = Metrics::global();
  for (const auto& pool : parts_->active()) {
    const Metrics::Labels plugin{{"plugin", pool->name()}};
    m.set("plugin_pool_size", plugin, static_cast<double>(pool->size()));
    m.set("jobs_in_flight", plugin, static_cast<double>(pool->busy()));
  }
  try {
    const nlohmann::json queues = parts_->pg_pool->with([](pqxx::connection& c) { return admin::queues(c); });
    m.clear("queue_depth");
    m.clear("dlq_size");
    for (const auto& q : queues) {
      const std::string name = q["name"];
      for (const char* band : {"high", "normal", "low"}) {
        m.set("queue_depth", {{"queue", name}, {"priority", band}}, q["waiting"][band].get<double>());
      }
      m.set("dlq_size", {{"queue", name}}, q["failed"].get<double>());
    }
  } catch (const std::exception& e) {
    spdlog::warn("metrics: queue depths not refreshed: {}", e.what());
  }
}

void Host::housekeeping(std::stop_token stop) {
  Parts& p = *parts_;
  std::unique_ptr<pqxx::connection> conn;
  auto next_heartbeat = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.heartbeat_ms);
  auto next_register = std::chrono::steady_clock::now() + kRegisterPeriod;
  int failures = 0;
  while (sleep_unless_stopped(stop, kSupervisePeriod)) {
    const auto pools = p.all();
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
        register_queues(*conn, p.active());
        next_register = now + kRegisterPeriod;
      }
      failures = 0;
    } catch (const std::exception& e) {
      if (failures++ % 25 == 0) spdlog::warn("housekeeping: {}; retrying", e.what());
      conn.reset();
    }
  }
}

}  // namespace jobhost
