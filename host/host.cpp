// host.cpp: start-up checks, the parts of a host wired together, and shutdown.
#include "host.hpp"

#include <signal.h>
#include <unistd.h>

#include <thread>

#include <spdlog/spdlog.h>

#include "api.hpp"
#include "autoscaler.hpp"
#include "completer.hpp"
#include "flow_runtime.hpp"
#include "gauges.hpp"
#include "pooler.hpp"
#include "job_context.hpp"
#include "lease_keeper.hpp"
#include "migrations.hpp"
#include "migrator.hpp"
#include "pg.hpp"
#include "pool_set.hpp"
#include "queue_registry.hpp"
#include "reaper.hpp"
#include "reconciler.hpp"
#include "redis.hpp"
#include "reloader.hpp"
#include "scheduler.hpp"
#include "worker_pool.hpp"

namespace jobhost {

struct Host::Parts {
  std::unique_ptr<PgPool> pg_pool;
  std::unique_ptr<FlowRuntime> flow;
  std::unique_ptr<Completer> completer;
  PoolSet pools;
  QueueRegistry registry{pools};
  std::unique_ptr<Gauges> gauges;
  std::unique_ptr<Reloader> reloader;
  // The role loops (autoscaler, migrator, reaper, reconciler, scheduler), each
  // on a thread of its own; declared before their threads, which end first.
  std::vector<std::unique_ptr<Service>> roles;
  std::vector<std::jthread> role_threads;
  std::unique_ptr<LeaseKeeper> lease_keeper;
  std::jthread housekeeping;
  std::unique_ptr<ApiServer> api;

  void start_role(std::unique_ptr<Service> s) {
    roles.push_back(std::move(s));
    role_threads.emplace_back([s = roles.back().get()](std::stop_token st) { s->run(st); });
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
  for (const auto& p : parts_->pools.all()) {
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
  apply_pooler_mode(config_);

  check_redis(config_);
  check_schema(config_);

  p.pg_pool = std::make_unique<PgPool>(config_.postgres_url, static_cast<size_t>(config_.postgres_pool_size));
  p.flow = std::make_unique<FlowRuntime>(config_.redis_url, config_.redis_key_prefix, config_.limiters);
  p.completer = std::make_unique<Completer>(config_.postgres_url);
  if (config_.has_role(Role::kWorker)) {
    for (size_t i = 0; i < config_.plugins.size(); ++i) {
      try {
        p.pools.add(make_pool(config_.plugins[i]));
      } catch (const PluginError& e) {
        throw StartupError(config_.file.string() + ":" + std::to_string(config_.plugins[i].line) + ": plugins[" +
                           std::to_string(i) + "]: " + e.what());
      }
    }
    auto conn = pg_connect(config_.postgres_url);
    p.registry.register_now(*conn);
  }
  p.gauges = std::make_unique<Gauges>(p.pools, *p.pg_pool, *p.flow);
  p.reloader = std::make_unique<Reloader>(
      config_, p.pools, [this](const PluginConfig& pc) { return make_pool(pc); }, p.registry, *p.flow);

  p.completer->start();
  for (auto& pool : p.pools.active()) pool->start();
  if (config_.has_role(Role::kWorker)) {
    p.start_role(std::make_unique<Autoscaler>(config_, [this] { return parts_->pools.active(); }));
  }
  if (config_.has_role(Role::kMigrator)) {
    p.start_role(std::make_unique<Migrator>(config_, [this] { return parts_->pools.active(); }));
  }
  if (config_.has_role(Role::kReaper)) {
    p.start_role(std::make_unique<Reaper>(config_));
    p.start_role(std::make_unique<Reconciler>(config_));
  }
  if (config_.has_role(Role::kScheduler)) p.start_role(std::make_unique<Scheduler>(config_));
  if (config_.has_role(Role::kApi)) {
    p.api = std::make_unique<ApiServer>(config_, api_hooks());
    try {
      p.api->start();
    } catch (const std::exception& e) {
      throw StartupError(e.what());
    }
  }
  p.lease_keeper = std::make_unique<LeaseKeeper>(config_, p.pools, p.registry, *p.flow, *p.completer);
  p.housekeeping = std::jthread([k = p.lease_keeper.get()](std::stop_token st) { k->run(st); });
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
      p.reloader->reload();
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
  for (auto& t : p.role_threads) t.request_stop();
  const auto pools = p.pools.all();
  for (auto& pool : pools) pool->stop_fetching();
  for (auto& pool : pools) pool->drain(deadline);
  p.pools.join_drainers();
  p.housekeeping.request_stop();
  if (p.housekeeping.joinable()) p.housekeeping.join();
  for (auto& t : p.role_threads) {
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
  std::shared_ptr<LoadedPlugin> plugin = LoadedPlugin::load(pc);
  spdlog::info("plugin {} {} loaded from {}: job types {}, {} workers, max_attempts {}", plugin->info().name,
               plugin->info().version, pc.library.string(), fmt::join(plugin->job_types(), ","),
               pc.scaling ? fmt::format("{}..{} (elastic)", pc.concurrency_min, pc.concurrency_max)
                          : std::to_string(pc.concurrency_max),
               plugin->retry().max_attempts);
  return std::make_shared<WorkerPool>(plugin, pc, config_, *p.completer, *p.pg_pool, *p.flow);
}

ApiHooks Host::api_hooks() {
  ApiHooks hooks;
  hooks.plugins = [this] {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& pool : parts_->pools.active()) {
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
    for (const auto& pool : parts_->pools.active()) {
      const auto& types = pool->plugin().job_types();
      if (std::find(types.begin(), types.end(), type) != types.end()) return pool->plugin().validate(type, payload);
    }
    return std::nullopt;
  };
  hooks.refresh_gauges = [this] { parts_->gauges->refresh(); };
  hooks.flow = [this](const std::string& queue) -> std::optional<FlowConfig> {
    for (const auto& pool : parts_->pools.active()) {
      const auto& types = pool->plugin().job_types();
      if (std::find(types.begin(), types.end(), queue) != types.end()) return *pool->flow();
    }
    return std::nullopt;
  };
  return hooks;
}

}  // namespace jobhost
