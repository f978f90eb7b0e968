// config.cpp: reads a deployment's YAML (DESIGN §5) into a Config. Every scalar is
// ${ENV}-interpolated before use, and anything invalid is refused with
// "<file>:<line>: <key path>: <what is wrong>" so the author can go straight to it.
#include "config.hpp"

#include "cron.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

namespace jobhost {
namespace {

using Json = nlohmann::ordered_json;  // ordered: settings keep the author's key order
using Keys = std::initializer_list<std::string_view>;

constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();
// Far above any real pool; catches a typo'd extra zero before it spawns threads.
constexpr int64_t kMaxConcurrency = 10000;

struct Range {
  int64_t lo;
  int64_t hi = kNoLimit;
};
constexpr Range kPositive{1};
constexpr Range kNonNegative{0};

constexpr std::array<std::pair<Role, const char*>, 5> kRoleNames{{
    {Role::kMigrator, "migrator"},
    {Role::kWorker, "worker"},
    {Role::kReaper, "reaper"},
    {Role::kScheduler, "scheduler"},
    {Role::kApi, "api"},
}};

// ---- small text helpers ---------------------------------------------------

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string index(const std::string& path, std::size_t i) { return path + "[" + std::to_string(i) + "]"; }

std::string join_list(std::initializer_list<std::string_view> items) {
  std::string out;
  for (std::string_view item : items) out += (out.empty() ? "" : ", ") + std::string(item);
  return out;
}

std::string valid_roles() {
  std::string out;
  for (const auto& [role, name] : kRoleNames) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// yaml-cpp marks are 0-based and -1 for nodes built without a position.
int line_of(const YAML::Node& node) { return std::max(node.Mark().line, 0) + 1; }

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t value = 0;
  const char* end = s.data() + s.size();
  const auto [stop, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || ec != std::errc() || stop != end) return std::nullopt;
  return value;
}

// Finite only: JSON cannot carry inf or nan, and no setting wants them.
std::optional<double> parse_double(std::string_view s) {
  double value = 0;
  const char* end = s.data() + s.size();
  const auto [stop, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || ec != std::errc() || stop != end || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::string range_text(Range r) {
  if (r.hi != kNoLimit) {
    return "must be between " + std::to_string(r.lo) + " and " + std::to_string(r.hi);
  }
  return r.lo == 1 ? "must be > 0" : "must be >= " + std::to_string(r.lo);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), std::size_t{0});
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string unknown_key_message(std::string_view key, Keys allowed) {
  const auto closest = std::min_element(allowed.begin(), allowed.end(), [&](auto x, auto y) {
    return edit_distance(key, x) < edit_distance(key, y);
  });
  // A third of the key may be wrong: catches typos and a dropped "_ms" alike.
  const std::size_t tolerance = std::max<std::size_t>(2, key.size() / 3);
  if (closest != allowed.end() && edit_distance(key, *closest) <= tolerance) {
    return "unknown key; did you mean " + quote(*closest) + "?";
  }
  return "unknown key; expected one of: " + join_list(allowed);
}

// ---- ${ENV} interpolation ---------------------------------------------------

bool is_env_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// `ref` is what stands between "${" and "}".
std::string expand_reference(std::string_view ref) {
  const std::size_t sep = ref.find(":-");
  const std::string name(ref.substr(0, sep));
  if (!is_env_name(name)) {
    throw ConfigError(quote("${" + std::string(ref) + "}") +
                      " is not a variable reference; write ${NAME} or ${NAME:-default}");
  }
  const char* value = std::getenv(name.c_str());
  if (sep == std::string_view::npos) {
    if (value == nullptr) {
      throw ConfigError("environment variable " + name + " is not set; set it, or give a default as ${" +
                        name + ":-default}");
    }
    return value;
  }
  // As in the shell, ":-" also covers a variable that is set but empty.
  return value != nullptr && *value != '\0' ? std::string(value) : std::string(ref.substr(sep + 2));
}

// ---- reading the file -------------------------------------------------------

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

[[noreturn]] void throw_unreadable(const std::filesystem::path& file) {
  throw ConfigError(file.string() + ": cannot read: " + std::generic_category().message(errno));
}

std::string read_file(const std::filesystem::path& file) {
  const std::unique_ptr<std::FILE, FileCloser> f(std::fopen(file.c_str(), "rb"));
  if (!f) throw_unreadable(file);
  std::string text;
  std::array<char, 8192> buffer;
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f.get())) > 0) text.append(buffer.data(), n);
  if (std::ferror(f.get())) throw_unreadable(file);  // e.g. a directory: EISDIR
  return text;
}

// ---- the parser -------------------------------------------------------------

// Walks the YAML tree. Every reader takes the key path it is at, so that any
// failure can say exactly where it is.
class Parser {
 public:
  explicit Parser(const std::filesystem::path& file) : file_(file), dir_(file.parent_path()) {}

  Config parse(const YAML::Node& root) const;

 private:
  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, const std::string& what) const;

  // Structure.
  void expect_keys(const YAML::Node& map, const std::string& path, Keys allowed) const;
  void expect_list(const YAML::Node& node, const std::string& path) const;
  std::optional<YAML::Node> section(const YAML::Node& parent, const std::string& path, const char* key,
                                    Keys allowed) const;

  // Values.
  std::string text(const YAML::Node& node, const std::string& path) const;
  int64_t integer(const YAML::Node& node, const std::string& path, Range range) const;
  double number(const YAML::Node& node, const std::string& path) const;
  std::string required_text(const YAML::Node& map, const std::string& path, const char* key) const;
  void read_text(const YAML::Node& map, const std::string& path, const char* key, std::string& out) const;
  void read_choice(const YAML::Node& map, const std::string& path, const char* key, std::string& out,
                   Keys choices) const;
  template <std::integral T>
  void read_int(const YAML::Node& map, const std::string& path, const char* key, T& out, Range range) const;
  template <std::integral T>
  void read_int(const YAML::Node& map, const std::string& path, const char* key, std::optional<T>& out,
                Range range) const;
  std::vector<std::string> string_list(const YAML::Node& node, const std::string& path) const;
  std::string mapping_json(const YAML::Node& node, const std::string& path) const;
  Json to_json(const YAML::Node& node, const std::string& path) const;
  Json scalar_to_json(const YAML::Node& node, const std::string& path) const;

  // Sections.
  void postgres(const YAML::Node& root, Config& c) const;
  void redis(const YAML::Node& root, Config& c) const;
  void host(const YAML::Node& root, Config& c) const;
  std::set<Role> roles(const YAML::Node& node, const std::string& path) const;
  void lease(const YAML::Node& host, Config& c) const;
  void api(const YAML::Node& root, Config& c) const;
  void api_access(const YAML::Node& api, Config& c) const;
  void rate(const YAML::Node& parent, const std::string& path, const char* key, double& per_s,
            double& burst) const;
  void log(const YAML::Node& root, Config& c) const;
  void schedules(const YAML::Node& root, Config& c) const;
  Schedule schedule(const YAML::Node& node, const std::string& path) const;
  void plugins(const YAML::Node& root, Config& c) const;
  PluginConfig plugin(const YAML::Node& node, const std::string& path) const;
  void concurrency(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const;
  void scaling(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const;
  void retry(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const;
  void flow(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const;
  Limits limits(const YAML::Node& node, const std::string& path, Keys allowed) const;
  void limiters(const YAML::Node& root, Config& c) const;
  void check_unique_name(const YAML::Node& node, const std::string& path, const PluginConfig& p,
                         const std::vector<PluginConfig>& earlier) const;
  void claim_job_types(const YAML::Node& node, const std::string& path, const PluginConfig& p,
                       const std::vector<PluginConfig>& earlier,
                       std::map<std::string, std::size_t>& claims) const;

  std::filesystem::path file_;
  std::filesystem::path dir_;
};

void Parser::fail(const YAML::Node& at, const std::string& path, const std::string& what) const {
  const std::string where = file_.string() + ":" + std::to_string(line_of(at)) + ": ";
  throw ConfigError(where + (path.empty() ? "" : path + ": ") + what);
}

// ---- structure ----

void Parser::expect_keys(const YAML::Node& map, const std::string& path, Keys allowed) const {
  if (map.IsNull()) return;  // "section:" with nothing under it: all defaults
  if (!map.IsMap()) fail(map, path, "must be a mapping (key: value pairs)");
  std::map<std::string, int> seen;  // key → line; yaml-cpp keeps duplicates silently
  for (const auto& entry : map) {
    const YAML::Node& key_node = entry.first;
    if (!key_node.IsScalar()) fail(key_node, path, "keys must be plain names");
    const std::string& key = key_node.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      fail(key_node, join(path, key), unknown_key_message(key, allowed));
    }
    if (const auto [it, fresh] = seen.emplace(key, line_of(key_node)); !fresh) {
      fail(key_node, join(path, key), "given twice (first at line " + std::to_string(it->second) + ")");
    }
  }
}

void Parser::expect_list(const YAML::Node& node, const std::string& path) const {
  if (!node.IsNull() && !node.IsSequence()) fail(node, path, "must be a list");
}

std::optional<YAML::Node> Parser::section(const YAML::Node& parent, const std::string& path, const char* key,
                                          Keys allowed) const {
  const YAML::Node node = parent[key];
  if (!node.IsDefined()) return std::nullopt;
  expect_keys(node, join(path, key), allowed);
  return node;
}

// ---- values ----

std::string Parser::text(const YAML::Node& node, const std::string& path) const {
  if (node.IsNull()) return "";
  if (!node.IsScalar()) fail(node, path, "must be a single value, not a list or mapping");
  try {
    return interpolate_env(node.Scalar());
  } catch (const ConfigError& e) {
    fail(node, path, e.what());
  }
}

int64_t Parser::integer(const YAML::Node& node, const std::string& path, Range range) const {
  const std::string value = text(node, path);
  const auto n = parse_int(value);
  if (!n) fail(node, path, "must be an integer, got " + quote(value));
  if (*n < range.lo || *n > range.hi) fail(node, path, range_text(range) + ", got " + value);
  return *n;
}

double Parser::number(const YAML::Node& node, const std::string& path) const {
  const std::string value = text(node, path);
  const auto n = parse_double(value);
  if (!n) fail(node, path, "must be a number, got " + quote(value));
  return *n;
}

std::string Parser::required_text(const YAML::Node& map, const std::string& path, const char* key) const {
  const YAML::Node node = map[key];
  if (!node.IsDefined()) fail(map, join(path, key), "is required");
  std::string value = text(node, join(path, key));
  if (value.empty()) fail(node, join(path, key), "must not be empty");
  return value;
}

void Parser::read_text(const YAML::Node& map, const std::string& path, const char* key,
                       std::string& out) const {
  if (const YAML::Node node = map[key]; node.IsDefined()) out = text(node, join(path, key));
}

void Parser::read_choice(const YAML::Node& map, const std::string& path, const char* key, std::string& out,
                         Keys choices) const {
  const YAML::Node node = map[key];
  if (!node.IsDefined()) return;
  const std::string value = text(node, join(path, key));
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    fail(node, join(path, key), "must be one of " + join_list(choices) + "; got " + quote(value));
  }
  out = value;
}

template <std::integral T>
void Parser::read_int(const YAML::Node& map, const std::string& path, const char* key, T& out,
                      Range range) const {
  const YAML::Node node = map[key];
  if (!node.IsDefined()) return;
  range.hi = std::min<int64_t>(range.hi, std::numeric_limits<T>::max());
  out = static_cast<T>(integer(node, join(path, key), range));
}

template <std::integral T>
void Parser::read_int(const YAML::Node& map, const std::string& path, const char* key, std::optional<T>& out,
                      Range range) const {
  if (!map[key].IsDefined()) return;
  T value{};
  read_int(map, path, key, value, range);
  out = value;
}

std::vector<std::string> Parser::string_list(const YAML::Node& node, const std::string& path) const {
  std::vector<std::string> out;
  if (!node.IsDefined()) return out;
  expect_list(node, path);
  for (const YAML::Node& item : node) {
    const std::string item_path = index(path, out.size());
    std::string value = text(item, item_path);
    if (value.empty()) fail(item, item_path, "must not be empty");
    out.push_back(std::move(value));
  }
  return out;
}

std::string Parser::mapping_json(const YAML::Node& node, const std::string& path) const {
  if (node.IsNull()) return "{}";
  if (!node.IsMap()) fail(node, path, "must be a mapping (key: value pairs)");
  return to_json(node, path).dump();
}

Json Parser::to_json(const YAML::Node& node, const std::string& path) const {
  if (node.IsScalar()) return scalar_to_json(node, path);
  if (node.IsSequence()) {
    Json array = Json::array();
    for (const YAML::Node& item : node) array.push_back(to_json(item, index(path, array.size())));
    return array;
  }
  if (!node.IsMap()) return nullptr;
  Json object = Json::object();
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) fail(entry.first, path, "keys must be plain names");
    const std::string& key = entry.first.Scalar();
    if (object.contains(key)) fail(entry.first, join(path, key), "given twice");
    object[key] = to_json(entry.second, join(path, key));
  }
  return object;
}

// Plain scalars get the type they look like; quoted ones ("8080") were asked to be text.
Json Parser::scalar_to_json(const YAML::Node& node, const std::string& path) const {
  std::string value = text(node, path);
  if (node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str") return value;
  if (value.empty() || value == "~" || value == "null") return nullptr;
  if (const auto n = parse_int(value)) return *n;
  if (const auto d = parse_double(value)) return *d;
  if (value == "true" || value == "false") return value == "true";
  return value;
}

// ---- sections ----

Config Parser::parse(const YAML::Node& root) const {
  if (!root.IsNull() && !root.IsMap()) {
    fail(root, "", "the top level must be a mapping of sections (postgres, redis, host, plugins, ...)");
  }
  expect_keys(root, "", {"postgres", "redis", "host", "api", "log", "schedules", "plugins", "limiters"});
  Config c;
  c.file = file_;
  postgres(root, c);
  redis(root, c);
  host(root, c);
  api(root, c);
  log(root, c);
  schedules(root, c);
  plugins(root, c);
  limiters(root, c);
  return c;
}

void Parser::postgres(const YAML::Node& root, Config& c) const {
  const auto node = section(root, "", "postgres", {"url", "pool_size", "listen_url", "pooler"});
  if (!node) fail(root, "postgres.url", "is required");
  c.postgres_url = required_text(*node, "postgres", "url");
  read_int(*node, "postgres", "pool_size", c.postgres_pool_size, Range{1, 1000});
  read_text(*node, "postgres", "listen_url", c.postgres_listen_url);
  read_choice(*node, "postgres", "pooler", c.postgres_pooler, {"none", "transaction"});
}

void Parser::redis(const YAML::Node& root, Config& c) const {
  const auto node = section(root, "", "redis", {"url", "key_prefix"});
  if (!node) fail(root, "redis.url", "is required");
  c.redis_url = required_text(*node, "redis", "url");
  // Every Redis key hangs off the prefix; an empty one would mix deployments.
  if ((*node)["key_prefix"].IsDefined()) c.redis_key_prefix = required_text(*node, "redis", "key_prefix");
}

void Parser::host(const YAML::Node& root, Config& c) const {
  const auto node = section(
      root, "", "host", {"id", "roles", "migrator", "lease", "reaper", "reconciler", "scheduler", "shutdown_grace_ms"});
  if (!node) return;
  read_text(*node, "host", "id", c.host_id);
  if (const YAML::Node r = (*node)["roles"]; r.IsDefined()) c.roles = roles(r, "host.roles");
  if (const auto m =
          section(*node, "host", "migrator", {"batch_size", "poll_interval_ms", "max_in_redis", "direct_lease"})) {
    read_int(*m, "host.migrator", "batch_size", c.migrator_batch_size, Range{1, 100000});
    read_int(*m, "host.migrator", "poll_interval_ms", c.migrator_poll_interval_ms, kPositive);
    read_int(*m, "host.migrator", "max_in_redis", c.migrator_max_in_redis, Range{1, 10000000});
    if (const YAML::Node d = (*m)["direct_lease"]; d.IsDefined()) {
      const std::string v = text(d, "host.migrator.direct_lease");
      if (v != "true" && v != "false") fail(d, "host.migrator.direct_lease", "must be true or false, got " + quote(v));
      c.migrator_direct_lease = v == "true";
    }
  }
  lease(*node, c);
  if (const auto r = section(*node, "host", "reaper", {"interval_ms"})) {
    read_int(*r, "host.reaper", "interval_ms", c.reaper_interval_ms, kPositive);
  }
  if (const auto r = section(*node, "host", "reconciler", {"interval_ms", "stale_after_ms"})) {
    read_int(*r, "host.reconciler", "interval_ms", c.reconciler_interval_ms, kPositive);
    read_int(*r, "host.reconciler", "stale_after_ms", c.reconciler_stale_after_ms, kPositive);
  }
  if (const auto s = section(*node, "host", "scheduler", {"catch_up_ms"})) {
    read_int(*s, "host.scheduler", "catch_up_ms", c.scheduler_catch_up_ms, Range{0, kNoLimit});
  }
  read_int(*node, "host", "shutdown_grace_ms", c.shutdown_grace_ms, kPositive);
}

std::set<Role> Parser::roles(const YAML::Node& node, const std::string& path) const {
  expect_list(node, path);
  std::set<Role> out;
  std::size_t i = 0;
  for (const YAML::Node& item : node) {
    const std::string item_path = index(path, i++);
    const std::string name = text(item, item_path);
    const auto known = std::find_if(kRoleNames.begin(), kRoleNames.end(),
                                    [&](const auto& entry) { return name == entry.second; });
    if (known == kRoleNames.end()) {
      fail(item, item_path, "unknown role " + quote(name) + "; valid roles are " + valid_roles());
    }
    out.insert(known->first);
  }
  if (out.empty()) fail(node, path, "must name at least one role (" + valid_roles() + ")");
  return out;
}

void Parser::lease(const YAML::Node& host, Config& c) const {
  const auto node = section(host, "host", "lease", {"duration_ms", "heartbeat_ms"});
  if (!node) return;
  read_int(*node, "host.lease", "duration_ms", c.lease_duration_ms, kPositive);
  read_int(*node, "host.lease", "heartbeat_ms", c.heartbeat_ms, kPositive);
  if (c.heartbeat_ms < c.lease_duration_ms) return;
  // A heartbeat no shorter than the lease lets leases lapse under running jobs.
  // Blame the key the author wrote; the other may be a default.
  const YAML::Node heartbeat = (*node)["heartbeat_ms"];
  if (heartbeat.IsDefined()) {
    fail(heartbeat, "host.lease.heartbeat_ms",
         "must be below duration_ms (" + std::to_string(c.lease_duration_ms) + "), got " +
             std::to_string(c.heartbeat_ms));
  }
  fail((*node)["duration_ms"], "host.lease.duration_ms",
       "must be above heartbeat_ms (" + std::to_string(c.heartbeat_ms) + ", the default), got " +
           std::to_string(c.lease_duration_ms));
}

void Parser::api(const YAML::Node& root, Config& c) const {
  const auto node = section(root, "", "api",
                            {"listen", "health_listen", "token", "max_connections",
                             "max_connections_per_client", "header_timeout_ms", "body_timeout_ms",
                             "idle_timeout_ms", "max_body_bytes", "threads", "queue", "rate_limit",
                             "read_token", "metrics_token", "tokens", "unsubscribe_secret"});
  if (!node) return;
  read_text(*node, "api", "listen", c.api_listen);
  read_text(*node, "api", "unsubscribe_secret", c.api_unsubscribe_secret);
  if (!c.api_unsubscribe_secret.empty() && c.api_unsubscribe_secret.size() < 16) {
    fail((*node)["unsubscribe_secret"], "api.unsubscribe_secret",
         "must be at least 16 characters (it checks the signatures of unsubscribe links), or empty: no one-click "
         "unsubscribe");
  }
  read_text(*node, "api", "health_listen", c.api_health_listen);
  read_text(*node, "api", "token", c.api_token);
  api_access(*node, c);
  // Port 0 picks a free port for each, so two of them do not clash.
  const bool any_port =
      c.api_listen.size() >= 2 && c.api_listen.compare(c.api_listen.size() - 2, 2, ":0") == 0;
  if (!c.api_health_listen.empty() && c.api_health_listen == c.api_listen && !any_port) {
    fail((*node)["health_listen"], "api.health_listen", "must differ from api.listen (" + c.api_listen + ")");
  }
  ApiLimits& l = c.api_limits;
  read_int(*node, "api", "max_connections", l.max_connections, Range{1, 1000000});
  read_int(*node, "api", "max_connections_per_client", l.max_connections_per_client, Range{1, 1000000});
  read_int(*node, "api", "header_timeout_ms", l.header_timeout_ms, Range{10, 3600000});
  read_int(*node, "api", "body_timeout_ms", l.body_timeout_ms, Range{10, 3600000});
  read_int(*node, "api", "idle_timeout_ms", l.idle_timeout_ms, Range{10, 3600000});
  read_int(*node, "api", "max_body_bytes", l.max_body_bytes, Range{1024, int64_t{1} << 30});
  read_int(*node, "api", "threads", l.threads, Range{1, 256});
  read_int(*node, "api", "queue", l.queue, Range{1, 100000});
  if (l.max_connections_per_client > l.max_connections) {
    const YAML::Node per = (*node)["max_connections_per_client"];
    fail(per.IsDefined() ? per : (*node)["max_connections"], "api.max_connections_per_client",
         "must be <= max_connections (" + std::to_string(l.max_connections) + "), got " +
             std::to_string(l.max_connections_per_client) +
             (per.IsDefined() ? "" : " (the default); set max_connections_per_client"));
  }
  const auto limit = section(*node, "api", "rate_limit", {"per_client", "per_token"});
  if (!limit) return;
  rate(*limit, "api.rate_limit", "per_client", l.client_per_s, l.client_burst);
  rate(*limit, "api.rate_limit", "per_token", l.token_per_s, l.token_burst);
}

// api.token, api.read_token, api.metrics_token and api.tokens: [{name, token,
// role}] as one list of named tokens. Messages never quote a token's value.
void Parser::api_access(const YAML::Node& api, Config& c) const {
  struct Given {
    ApiToken token;
    YAML::Node at;
    std::string path;
  };
  std::vector<Given> given;
  const auto single = [&](const char* key, ApiToken::Role role) {
    std::string value;
    read_text(api, "api", key, value);
    if (!value.empty()) given.push_back({{join("api", key), value, role}, api[key], join("api", key)});
  };
  single("token", ApiToken::Role::kWrite);
  single("read_token", ApiToken::Role::kRead);
  single("metrics_token", ApiToken::Role::kMetrics);
  if (const YAML::Node list = api["tokens"]; list.IsDefined()) {
    expect_list(list, "api.tokens");
    std::size_t i = 0;
    for (const YAML::Node& item : list) {
      const std::string path = index("api.tokens", i++);
      expect_keys(item, path, {"name", "token", "role"});
      ApiToken t;
      t.name = required_text(item, path, "name");
      t.token = required_text(item, path, "token");
      std::string role = "read";
      read_choice(item, path, "role", role, {"read", "write"});
      t.role = role == "write" ? ApiToken::Role::kWrite : ApiToken::Role::kRead;
      given.push_back({t, item["token"], join(path, "token")});
      for (std::size_t j = 0; j + 1 < given.size(); ++j) {
        if (given[j].token.name == t.name) fail(item["name"], join(path, "name"), "given twice; names must be unique");
      }
    }
  }
  for (std::size_t i = 0; i < given.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (given[i].token.token == given[j].token.token) {
        fail(given[i].at, given[i].path,
             "the same token as " + given[j].path + "; each token must name one caller (the audit log says who)");
      }
    }
    c.api_access.push_back(given[i].token);
  }
}

// { requests_per_s: R, burst: B }: R = 0 turns the limit off; B defaults to 2 R.
void Parser::rate(const YAML::Node& parent, const std::string& path, const char* key, double& per_s,
                  double& burst) const {
  const auto node = section(parent, path, key, {"requests_per_s", "burst"});
  if (!node) return;
  const std::string here = join(path, key);
  const auto read_rate = [&](const char* name, double& out) {
    const YAML::Node value = (*node)[name];
    if (!value.IsDefined()) return false;
    const std::string value_path = join(here, name);
    out = number(value, value_path);
    if (out < 0 || out > 1e9) {
      fail(value, value_path, "must be between 0 and 1000000000, got " + text(value, value_path));
    }
    return true;
  };
  const bool rate_given = read_rate("requests_per_s", per_s);
  if (!read_rate("burst", burst)) {
    if (rate_given) burst = 2 * per_s;
  } else if (per_s > 0 && burst < 1) {
    fail((*node)["burst"], join(here, "burst"), "must be >= 1 while requests_per_s is above 0");
  }
}

void Parser::log(const YAML::Node& root, Config& c) const {
  const auto node = section(root, "", "log", {"format", "level"});
  if (!node) return;
  read_choice(*node, "log", "format", c.log_format, {"text", "json"});
  read_choice(*node, "log", "level", c.log_level, {"trace", "debug", "info", "warn", "error"});
}

void Parser::schedules(const YAML::Node& root, Config& c) const {
  const YAML::Node list = root["schedules"];
  if (!list.IsDefined()) return;
  expect_list(list, "schedules");
  for (const YAML::Node& node : list)
    c.schedules.push_back(schedule(node, index("schedules", c.schedules.size())));
}

Schedule Parser::schedule(const YAML::Node& node, const std::string& path) const {
  expect_keys(node, path, {"job_type", "cron", "payload"});
  Schedule s;
  s.line = line_of(node);
  s.job_type = required_text(node, path, "job_type");
  s.cron = required_text(node, path, "cron");
  try {
    // An expression that can never fire ("0 0 30 2 *") is refused too.
    Cron::parse(s.cron).next_after(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
  } catch (const std::exception& e) {
    fail(node["cron"], join(path, "cron"), e.what());
  }
  if (const YAML::Node payload = node["payload"]; payload.IsDefined()) {
    s.payload_json = mapping_json(payload, join(path, "payload"));
  }
  return s;
}

void Parser::plugins(const YAML::Node& root, Config& c) const {
  const YAML::Node list = root["plugins"];
  if (!list.IsDefined()) return;
  expect_list(list, "plugins");
  std::map<std::string, std::size_t> claims;  // job type → index of the plugin that runs it
  for (const YAML::Node& node : list) {
    const std::string path = index("plugins", c.plugins.size());
    PluginConfig p = plugin(node, path);
    check_unique_name(node, path, p, c.plugins);
    claim_job_types(node, path, p, c.plugins, claims);
    c.plugins.push_back(std::move(p));
  }
}

PluginConfig Parser::plugin(const YAML::Node& node, const std::string& path) const {
  expect_keys(node, path,
              {"name", "library", "job_types", "concurrency", "scaling", "retry", "timeout_ms", "settings", "flow"});
  PluginConfig p;
  p.line = line_of(node);
  p.name = required_text(node, path, "name");
  // Relative to the YAML file, not the working directory, so the same file
  // works wherever jobhost is started from. Existence is the loader's job.
  p.library = std::filesystem::absolute(dir_ / required_text(node, path, "library")).lexically_normal();
  p.job_types = string_list(node["job_types"], join(path, "job_types"));
  concurrency(node, path, p);
  scaling(node, path, p);
  retry(node, path, p);
  flow(node, path, p);
  read_int(node, path, "timeout_ms", p.timeout_ms, kPositive);
  if (const YAML::Node settings = node["settings"]; settings.IsDefined()) {
    p.settings_json = mapping_json(settings, join(path, "settings"));
  }
  return p;
}

void Parser::concurrency(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const {
  const auto node = section(plugin, path, "concurrency", {"min", "max"});
  if (!node) return;
  const std::string here = join(path, "concurrency");
  read_int(*node, here, "min", p.concurrency_min, Range{0, kMaxConcurrency});
  read_int(*node, here, "max", p.concurrency_max, Range{1, kMaxConcurrency});
  if (p.concurrency_max >= p.concurrency_min) return;
  const YAML::Node max = (*node)["max"];
  fail(max.IsDefined() ? max : *node, join(here, "max"),
       "must be >= min (" + std::to_string(p.concurrency_min) + "), got " +
           std::to_string(p.concurrency_max) + (max.IsDefined() ? "" : " (the default); set max"));
}

void Parser::scaling(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const {
  const auto node = section(plugin, path, "scaling", {"queue_depth_above", "memory_percent_above", "idle_ms"});
  if (!node) return;
  p.scaling = true;
  const std::string here = join(path, "scaling");
  read_int(*node, here, "queue_depth_above", p.scaling_queue_depth_above, kNonNegative);
  read_int(*node, here, "idle_ms", p.scaling_idle_ms, kPositive);
  const YAML::Node memory = (*node)["memory_percent_above"];
  if (!memory.IsDefined()) return;
  const std::string memory_path = join(here, "memory_percent_above");
  const double percent = number(memory, memory_path);
  if (percent <= 0 || percent > 100) {
    fail(memory, memory_path,
         "must be a percentage above 0 and at most 100, got " + text(memory, memory_path));
  }
  p.scaling_memory_percent_above = percent;
}

void Parser::retry(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const {
  const auto node = section(plugin, path, "retry", {"max_attempts", "base_ms", "max_ms"});
  if (!node) return;
  const std::string here = join(path, "retry");
  read_int(*node, here, "max_attempts", p.retry.max_attempts, kPositive);
  read_int(*node, here, "base_ms", p.retry.base_ms, kNonNegative);
  read_int(*node, here, "max_ms", p.retry.max_ms, kNonNegative);
  // Only comparable when both are given; otherwise one comes from the plugin.
  if (p.retry.base_ms && p.retry.max_ms && *p.retry.max_ms < *p.retry.base_ms) {
    fail((*node)["max_ms"], join(here, "max_ms"),
         "must be >= base_ms (" + std::to_string(*p.retry.base_ms) + "), got " +
             std::to_string(*p.retry.max_ms));
  }
}

// flow: { key, fair, concurrency, rate, per_key: {concurrency, rate}, overrides: {KEY: {...}} }
void Parser::flow(const YAML::Node& plugin, const std::string& path, PluginConfig& p) const {
  const auto node = section(plugin, path, "flow", {"key", "fair", "concurrency", "rate", "per_key", "overrides"});
  if (!node) return;
  const std::string here = join(path, "flow");
  FlowConfig& f = p.flow;
  f.enabled = true;
  if (const YAML::Node key = (*node)["key"]; key.IsDefined()) {
    f.key_pointer = text(key, join(here, "key"));
    try {
      f.key_path = parse_json_pointer(f.key_pointer);
    } catch (const std::invalid_argument& e) {
      fail(key, join(here, "key"), e.what());
    }
  }
  if (const YAML::Node fair = (*node)["fair"]; fair.IsDefined()) {
    const std::string v = text(fair, join(here, "fair"));
    if (v != "true" && v != "false") fail(fair, join(here, "fair"), "must be true or false, got " + quote(v));
    f.fair = v == "true";
  }
  f.queue = limits(*node, here, {"key", "fair", "concurrency", "rate", "per_key", "overrides"});
  if (const auto per_key = section(*node, here, "per_key", {"concurrency", "rate"})) {
    f.per_key = limits(*per_key, join(here, "per_key"), {"concurrency", "rate"});
  }
  const YAML::Node overrides = (*node)["overrides"];
  if (!overrides.IsDefined() || overrides.IsNull()) return;
  if (!overrides.IsMap()) fail(overrides, join(here, "overrides"), "must be a mapping of key values to limits");
  for (const auto& entry : overrides) {
    const std::string key = entry.first.Scalar();
    const std::string at = join(join(here, "overrides"), key);
    if (f.overrides.count(key)) fail(entry.first, at, "given twice");
    f.overrides[key] = limits(entry.second, at, {"concurrency", "rate"});
  }
}

// The concurrency: and rate: of a mapping whose other keys are `allowed`.
Limits Parser::limits(const YAML::Node& node, const std::string& path, Keys allowed) const {
  expect_keys(node, path, allowed);
  Limits out;
  if (node.IsNull()) return out;
  read_int(node, path, "concurrency", out.concurrency, Range{1, 10000000});
  const auto rate = section(node, path, "rate", {"limit", "per_ms", "burst"});
  if (!rate) return out;
  const std::string here = join(path, "rate");
  if (!(*rate)["limit"].IsDefined()) fail(*rate, join(here, "limit"), "is required");
  RateLimit r;
  read_int(*rate, here, "limit", r.limit, Range{1, 1000000000});
  read_int(*rate, here, "per_ms", r.per_ms, Range{1, 86400000});
  r.burst = r.limit;
  read_int(*rate, here, "burst", r.burst, Range{1, 1000000000});
  out.rate = r;
  return out;
}

void Parser::limiters(const YAML::Node& root, Config& c) const {
  const YAML::Node node = root["limiters"];
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) fail(node, "limiters", "must be a mapping of limiter names to limits");
  for (const auto& entry : node) {
    const std::string name = entry.first.Scalar();
    const std::string at = join("limiters", name);
    if (name.empty() || name == "*") fail(entry.first, at, "a limiter needs a name or a prefix before '*'");
    if (name.find('*') != name.size() - 1 && name.find('*') != std::string::npos) {
      fail(entry.first, at, "'*' may only end a name (\"domain:*\" matches every name starting \"domain:\")");
    }
    for (const auto& l : c.limiters) {
      if (l.name == name) fail(entry.first, at, "given twice (first at line " + std::to_string(l.line) + ")");
    }
    LimiterConfig l{name, limits(entry.second, at, {"concurrency", "rate"}), line_of(entry.first)};
    if (!l.limits.any()) fail(entry.second, at, "needs a concurrency: or a rate:");
    c.limiters.push_back(std::move(l));
  }
}

void Parser::check_unique_name(const YAML::Node& node, const std::string& path, const PluginConfig& p,
                               const std::vector<PluginConfig>& earlier) const {
  for (const PluginConfig& other : earlier) {
    if (other.name == p.name) {
      fail(node["name"], join(path, "name"),
           "duplicate plugin name " + quote(p.name) + " (first at line " + std::to_string(other.line) + ")");
    }
  }
}

// Each job type is routed to exactly one plugin, so a second claim is refused.
void Parser::claim_job_types(const YAML::Node& node, const std::string& path, const PluginConfig& p,
                             const std::vector<PluginConfig>& earlier,
                             std::map<std::string, std::size_t>& claims) const {
  const YAML::Node types = node["job_types"];
  for (std::size_t i = 0; i < p.job_types.size(); ++i) {
    const auto [it, fresh] = claims.emplace(p.job_types[i], earlier.size());
    if (fresh) continue;
    const std::string item_path = index(join(path, "job_types"), i);
    if (it->second == earlier.size())
      fail(types[i], item_path, "job type " + quote(p.job_types[i]) + " listed twice");
    const PluginConfig& owner = earlier[it->second];
    fail(types[i], item_path,
         "job type " + quote(p.job_types[i]) + " is already claimed by plugin " + quote(owner.name) +
             " (line " + std::to_string(owner.line) + "); each job type belongs to one plugin");
  }
}

}  // namespace

std::set<Role> parse_roles(const std::string& csv) {
  std::set<Role> out;
  std::size_t start = 0;
  while (start <= csv.size()) {
    const std::size_t comma = std::min(csv.find(',', start), csv.size());
    const std::string name = csv.substr(start, comma - start);
    const auto known = std::find_if(kRoleNames.begin(), kRoleNames.end(),
                                    [&](const auto& entry) { return name == entry.second; });
    if (known == kRoleNames.end()) {
      throw ConfigError("--roles: unknown role " + quote(name) + "; valid roles are " + valid_roles());
    }
    out.insert(known->first);
    start = comma + 1;
  }
  return out;
}

const char* role_name(Role r) {
  for (const auto& [role, name] : kRoleNames) {
    if (role == r) return name;
  }
  return "unknown";
}

std::string interpolate_env(const std::string& text) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t start = text.find("${", pos);
    if (start == std::string::npos) return out.append(text, pos);
    out.append(text, pos, start - pos);
    const std::size_t end = text.find('}', start + 2);
    if (end == std::string::npos) throw ConfigError("unterminated \"${\" in " + quote(text));
    out += expand_reference(std::string_view(text).substr(start + 2, end - start - 2));
    pos = end + 1;
  }
}

Config parse_config(const std::string& yaml_text, const std::filesystem::path& file) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(file.string() + ":" + std::to_string(std::max(e.mark.line, 0) + 1) + ": " + e.msg);
  }
  return Parser(file).parse(root);
}

Config load_config(const std::filesystem::path& file) { return parse_config(read_file(file), file); }

}  // namespace jobhost
