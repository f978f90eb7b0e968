// config.hpp: a deployment's YAML configuration (DESIGN §5), parsed and validated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "flow.hpp"

namespace jobhost {

// Thrown for any invalid configuration. what() reads
//   "<file>:<line>: <key path>: <what is wrong>"
// e.g. "config/jobhost.yaml:14: plugins[0].concurrency.max: must be >= min (50)".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Role { kMigrator, kWorker, kReaper, kScheduler, kApi };

// Keys given in the YAML's retry: block; absent keys fall back to the plugin's
// declared default, then to RetryPolicy's defaults.
struct RetryOverrides {
  std::optional<int> max_attempts;
  std::optional<int64_t> base_ms;
  std::optional<int64_t> max_ms;
};

struct PluginConfig {
  std::string name;
  std::filesystem::path library;  // resolved: absolute, or relative to the YAML file's folder
  std::vector<std::string> job_types;  // empty: the types the plugin declares
  int concurrency_min = 1;
  int concurrency_max = 1;
  // A scaling: block makes the pool elastic between concurrency min and max:
  // it grows while the queue is deeper than queue_depth_above (any waiting job
  // when absent) and memory use is below memory_percent_above, and shrinks
  // after idle_ms without work. Without the block it runs max workers.
  bool scaling = false;
  std::optional<int64_t> scaling_queue_depth_above;
  std::optional<double> scaling_memory_percent_above;
  int64_t scaling_idle_ms = 30000;
  RetryOverrides retry;
  int64_t timeout_ms = 30000;
  std::string settings_json = "{}";  // the settings: block as JSON text, untouched
  FlowConfig flow;                    // the flow: block (DESIGN §9)
  int line = 0;                       // where the entry starts in the YAML (1-based)
};

struct Schedule {
  std::string job_type;
  std::string cron;  // 5 fields, UTC
  std::string payload_json = "{}";
  int line = 0;
};

// The admin API's admission control (README, "Admin HTTP API and metrics").
// A rate of 0 turns that limit off.
struct ApiLimits {
  int max_connections = 2048;            // open at once; lowered to fit RLIMIT_NOFILE
  int max_connections_per_client = 128;  // per peer address
  int64_t header_timeout_ms = 3000;      // accept or previous response → whole header
  int64_t body_timeout_ms = 10000;       // the whole body in; also a response out
  int64_t idle_timeout_ms = 5000;        // keep-alive: previous response → next header
  int64_t max_body_bytes = 1 << 20;      // refused from Content-Length, before reading
  int threads = 8;                       // handler threads (PostgreSQL and Redis work)
  int queue = 256;                       // requests waiting for a handler thread; then 503
  double client_per_s = 200;             // requests per second per client address
  double client_burst = 400;
  double token_per_s = 2000;  // requests per second per API token
  double token_burst = 4000;
  bool operator==(const ApiLimits&) const = default;
};

// A named API token (api.tokens): the audit log says who by its name.
struct ApiToken {
  enum class Role { kRead, kWrite, kMetrics };  // write implies read; metrics reads /metrics only
  std::string name;
  std::string token;
  Role role = Role::kRead;
  bool operator==(const ApiToken&) const = default;
};

struct Config {
  std::filesystem::path file;

  std::string postgres_url;
  int postgres_pool_size = 8;
  // A direct connection (not through a pooler) for LISTEN; empty: LISTEN on
  // postgres.url, or poll when postgres.pooler is "transaction".
  std::string postgres_listen_url;
  // "transaction": postgres.url goes through a transaction-mode pooler
  // (PgBouncer), so nothing may rely on session state: no named prepared
  // statements, and LISTEN only on postgres.listen_url.
  std::string postgres_pooler = "none";
  bool behind_transaction_pooler() const { return postgres_pooler == "transaction"; }

  std::string redis_url;
  std::string redis_key_prefix = "jobhost";

  std::set<Role> roles = {Role::kMigrator, Role::kWorker, Role::kReaper};
  std::string host_id;  // empty: "<hostname>-<pid>"

  int migrator_batch_size = 500;
  int64_t migrator_poll_interval_ms = 1000;
  // Ids of one queue waiting in Redis, at most (plus one batch per other
  // migrator racing): the backlog beyond it stays in PostgreSQL.
  int migrator_max_in_redis = 20000;
  // Jobs for this host's idle workers are leased by the claim itself (migrator.hpp).
  bool migrator_direct_lease = true;

  int64_t lease_duration_ms = 30000;
  int64_t heartbeat_ms = 10000;

  int64_t reaper_interval_ms = 1000;
  int64_t reconciler_interval_ms = 5000;
  int64_t reconciler_stale_after_ms = 15000;
  // A scheduler that starts (or gets PostgreSQL back) fires the ticks it missed
  // in this window; older ones are skipped, never piled up.
  int64_t scheduler_catch_up_ms = 300000;

  int64_t shutdown_grace_ms = 30000;

  std::string api_listen = "127.0.0.1:8080";
  // A second listener that serves only /healthz and /readyz on a thread of its
  // own; empty: none (the probes are still answered on api.listen).
  std::string api_health_listen;
  std::string api_token;
  // The secret email.send signs one-click unsubscribe links with (its
  // settings' unsubscribe.secret); "" : POST /api/v1/unsubscribe/{token} refuses every token.
  std::string api_unsubscribe_secret;
  ApiLimits api_limits;
  // Access control (README, "Access control and audit"): every configured
  // token, api.token (write), api.read_token (read), api.metrics_token and
  // api.tokens, with the name the audit log records.
  std::vector<ApiToken> api_access;

  std::string log_format = "text";  // text | json
  std::string log_level = "info";   // trace|debug|info|warn|error

  std::vector<Schedule> schedules;
  std::vector<PluginConfig> plugins;
  std::vector<LimiterConfig> limiters;  // top-level limiters:, for job.acquire()

  bool has_role(Role r) const { return roles.count(r) != 0; }
};

// Reads, interpolates (${NAME} and ${NAME:-default} from the environment) and
// validates a config file. Throws ConfigError naming file, line and key.
Config load_config(const std::filesystem::path& file);

// Parses YAML text as if it were read from `file` (for tests and --check-config).
Config parse_config(const std::string& yaml_text, const std::filesystem::path& file);

// Replaces ${NAME} / ${NAME:-default} in text. Throws ConfigError (without a
// location; callers add it) naming the variable when it is unset and has no default.
std::string interpolate_env(const std::string& text);

const char* role_name(Role r);
// "migrator,worker" (jobhost --roles) → roles; throws ConfigError naming an unknown one.
std::set<Role> parse_roles(const std::string& csv);

}  // namespace jobhost
