// host.cpp: start-up checks, role threads, housekeeping and shutdown.
#include "host.hpp"

#include <signal.h>
#include <unistd.h>

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
  for (const auto& p : parts_->pools) {
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
      const PluginConfig& pc = config_.plugins[i];
      std::shared_ptr<LoadedPlugin> plugin;
      try {
        plugin = LoadedPlugin::load(pc, host_api());
      } catch (const PluginError& e) {
        throw StartupError(config_.file.string() + ":" + std::to_string(pc.line) + ": plugins[" +
                           std::to_string(i) + "]: " + e.what());
      }
      spdlog::info("plugin {} {} loaded from {}: job types {}, {} workers, max_attempts {}",
                   plugin->info().name, plugin->info().version, pc.library.string(),
                   fmt::join(plugin->job_types(), ","),
                   pc.scaling ? fmt::format("{}..{} (elastic)", pc.concurrency_min, pc.concurrency_max)
                              : std::to_string(pc.concurrency_max),
                   plugin->retry().max_attempts);
      p.pools.push_back(std::make_shared<WorkerPool>(plugin, pc, config_, *p.completer, *p.pg_pool));
    }
    auto conn = pg_connect(config_.postgres_url);
    register_queues(*conn, p.pools);
  }

  p.completer->start();
  for (auto& pool : p.pools) pool->start();
  if (config_.has_role(Role::kWorker)) {
    p.roles.emplace_back([a = Autoscaler(config_, p.pools)](std::stop_token st) mutable { a.run(st); });
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
      spdlog::warn("SIGHUP: configuration reload is not built yet in this version; keeping the "
                   "running configuration");
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
  for (auto& pool : p.pools) pool->stop_fetching();
  for (auto& pool : p.pools) pool->drain(deadline);
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

ApiHooks Host::api_hooks() {
  ApiHooks hooks;
  hooks.plugins = [this] {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& pool : parts_->pools) {
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
    for (const auto& pool : parts_->pools) {
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
  for (const auto& pool : parts_->pools) {
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
    for (auto& pool : p.pools) pool->supervise();
    const auto now = std::chrono::steady_clock::now();
    if (now < next_heartbeat && now < next_register) continue;
    try {
      if (!conn || !conn->is_open()) conn = pg_connect(config_.postgres_url);
      if (now >= next_heartbeat) {
        std::vector<std::pair<std::string, int>> held;
        for (auto& pool : p.pools) pool->held_leases(held);
        const LeaseCheck check = extend_leases(*conn, held, config_.lease_duration_ms);
        if (!check.lost.empty()) {
          spdlog::warn("{} leases were lost (expired and reaped); cancelling those attempts", check.lost.size());
          for (auto& pool : p.pools) pool->cancel(check.lost);
        }
        if (!check.cancel_requested.empty()) {
          for (const auto& id : check.cancel_requested) spdlog::info("job {}: cancellation requested; asking its handler to stop", id);
          for (auto& pool : p.pools) pool->cancel(check.cancel_requested);
        }
        next_heartbeat = now + std::chrono::milliseconds(config_.heartbeat_ms);
      }
      if (now >= next_register) {
        register_queues(*conn, p.pools);
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
