// config_test.cpp: the YAML config is read as documented in DESIGN §5, and every
// mistake is refused with a message naming the file, the line and the key.
#include "config.hpp"

#include <algorithm>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using jobhost::Config;
using jobhost::ConfigError;
using jobhost::Role;

namespace {

// Not read from disk: parse_config only uses it for messages and library paths.
const std::filesystem::path kFile = "/etc/jobhost/test.yaml";

// Lines 1 and 2 of most test documents, so the lines under test start at 3.
const std::string kRequired =
    "postgres: { url: \"postgres://db/jobs\" }\n"
    "redis: { url: \"redis://cache:6379\" }\n";

Config parse(const std::string& yaml) { return jobhost::parse_config(yaml, kFile); }

// The message parse_config refuses `yaml` with, or a marker when it accepts it.
std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

// Sets an environment variable for one test and puts back what was there, since
// DATABASE_URL and REDIS_URL may be set by whoever runs the tests.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

nlohmann::json settings_of(const std::string& settings_yaml) {
  const Config c = parse(kRequired +
                         "plugins:\n"
                         "  - name: p\n"
                         "    library: /lib/p.so\n"
                         "    settings: " +
                         settings_yaml + "\n");
  return nlohmann::json::parse(c.plugins.at(0).settings_json);
}

std::string cron_error(const std::string& cron) {
  return error_of(kRequired + "schedules:\n  - { job_type: t, cron: \"" + cron + "\" }\n");
}

}  // namespace

// ---- what a valid file gives ------------------------------------------------

TEST_CASE("a full config is read with env interpolation and every value in place") {
  const ScopedEnv db("JOBHOST_TEST_DB_URL", "postgres://u@pg/jobs");
  const ScopedEnv token("JOBHOST_TEST_TOKEN", "s3cret");
  ::unsetenv("JOBHOST_TEST_UNSET_PREFIX");
  const Config c = parse(R"(postgres: { url: "${JOBHOST_TEST_DB_URL}", pool_size: 12 }
redis:    { url: "redis://r:6379/0", key_prefix: "${JOBHOST_TEST_UNSET_PREFIX:-staging}" }
host:
  id: host-a
  roles: [worker, scheduler, api]
  migrator: { batch_size: 250, poll_interval_ms: 500, max_in_redis: 4000 }
  lease:    { duration_ms: 20000, heartbeat_ms: 5000 }
  reaper:   { interval_ms: 2000 }
  reconciler: { interval_ms: 7000, stale_after_ms: 21000 }
  shutdown_grace_ms: 45000
api: { listen: "0.0.0.0:9090", token: "${JOBHOST_TEST_TOKEN}" }
log: { format: json, level: debug }
schedules:
  - { job_type: maintenance.cleanup, cron: "0 3 * * *", payload: { days: 30 } }
plugins:
  - name: email_send
    library: /opt/jobhost/libemail_send.so
    job_types: [email.send, email.bulk]
    concurrency: { min: 50, max: 100 }
    scaling: { queue_depth_above: 1000, memory_percent_above: 80.5 }
    retry: { max_attempts: 5, base_ms: 1000, max_ms: 600000 }
    timeout_ms: 15000
    settings: { smtp_url: "smtp://127.0.0.1:2525" }
)");
  CHECK(c.file == kFile);
  CHECK(c.postgres_url == "postgres://u@pg/jobs");
  CHECK(c.postgres_pool_size == 12);
  CHECK(c.redis_url == "redis://r:6379/0");
  CHECK(c.redis_key_prefix == "staging");
  CHECK(c.host_id == "host-a");
  CHECK(c.roles == std::set<Role>{Role::kWorker, Role::kScheduler, Role::kApi});
  CHECK_FALSE(c.has_role(Role::kMigrator));
  CHECK(c.migrator_batch_size == 250);
  CHECK(c.migrator_poll_interval_ms == 500);
  CHECK(c.migrator_max_in_redis == 4000);
  CHECK(c.lease_duration_ms == 20000);
  CHECK(c.heartbeat_ms == 5000);
  CHECK(c.reaper_interval_ms == 2000);
  CHECK(c.reconciler_interval_ms == 7000);
  CHECK(c.reconciler_stale_after_ms == 21000);
  CHECK(c.shutdown_grace_ms == 45000);
  CHECK(c.api_listen == "0.0.0.0:9090");
  CHECK(c.api_token == "s3cret");
  CHECK(c.log_format == "json");
  CHECK(c.log_level == "debug");

  REQUIRE(c.schedules.size() == 1);
  CHECK(c.schedules[0].job_type == "maintenance.cleanup");
  CHECK(c.schedules[0].cron == "0 3 * * *");
  CHECK(c.schedules[0].payload_json == R"({"days":30})");
  CHECK(c.schedules[0].line == 14);

  REQUIRE(c.plugins.size() == 1);
  const auto& p = c.plugins[0];
  CHECK(p.name == "email_send");
  CHECK(p.line == 16);
  CHECK(p.library == "/opt/jobhost/libemail_send.so");
  CHECK(p.job_types == std::vector<std::string>{"email.send", "email.bulk"});
  CHECK(p.concurrency_min == 50);
  CHECK(p.concurrency_max == 100);
  CHECK(p.scaling_queue_depth_above == 1000);
  CHECK(p.scaling_memory_percent_above == Approx(80.5));
  CHECK(p.retry.max_attempts == 5);
  CHECK(p.retry.base_ms == 1000);
  CHECK(p.retry.max_ms == 600000);
  CHECK(p.timeout_ms == 15000);
  CHECK(p.settings_json == R"({"smtp_url":"smtp://127.0.0.1:2525"})");
}

TEST_CASE("a config with only the required keys gets the documented defaults") {
  const Config c = parse(kRequired);
  const Config defaults;
  CHECK(c.postgres_url == "postgres://db/jobs");
  CHECK(c.redis_url == "redis://cache:6379");
  CHECK(c.postgres_pool_size == 8);
  CHECK(c.redis_key_prefix == "jobhost");
  CHECK(c.roles == std::set<Role>{Role::kMigrator, Role::kWorker, Role::kReaper});
  CHECK(c.host_id.empty());
  CHECK(c.migrator_batch_size == 500);
  CHECK(c.migrator_max_in_redis == 20000);
  CHECK(c.lease_duration_ms == defaults.lease_duration_ms);
  CHECK(c.heartbeat_ms == defaults.heartbeat_ms);
  CHECK(c.reaper_interval_ms == defaults.reaper_interval_ms);
  CHECK(c.shutdown_grace_ms == defaults.shutdown_grace_ms);
  CHECK(c.api_listen == "127.0.0.1:8080");
  CHECK(c.log_format == "text");
  CHECK(c.log_level == "info");
  CHECK(c.schedules.empty());
  CHECK(c.plugins.empty());
}

TEST_CASE("a plugin without optional keys keeps the header's defaults and no retry overrides") {
  const Config c = parse(kRequired + "plugins:\n  - { name: p, library: /lib/p.so }\n");
  REQUIRE(c.plugins.size() == 1);
  const auto& p = c.plugins[0];
  CHECK(p.line == 4);
  CHECK(p.job_types.empty());
  CHECK(p.concurrency_min == 1);
  CHECK(p.concurrency_max == 1);
  CHECK_FALSE(p.scaling_queue_depth_above.has_value());
  CHECK_FALSE(p.scaling_memory_percent_above.has_value());
  CHECK_FALSE(p.retry.max_attempts.has_value());
  CHECK_FALSE(p.retry.base_ms.has_value());
  CHECK_FALSE(p.retry.max_ms.has_value());
  CHECK(p.timeout_ms == 30000);
  CHECK(p.settings_json == "{}");
}

TEST_CASE("an env default is used when the variable is unset or empty, the value when set") {
  ::unsetenv("JOBHOST_TEST_MAYBE");
  CHECK(jobhost::interpolate_env("a-${JOBHOST_TEST_MAYBE:-dflt}-b") == "a-dflt-b");
  {
    const ScopedEnv empty("JOBHOST_TEST_MAYBE", "");
    CHECK(jobhost::interpolate_env("${JOBHOST_TEST_MAYBE:-dflt}") == "dflt");
    CHECK(jobhost::interpolate_env("[${JOBHOST_TEST_MAYBE}]") == "[]");
  }
  const ScopedEnv set("JOBHOST_TEST_MAYBE", "x");
  CHECK(jobhost::interpolate_env("${JOBHOST_TEST_MAYBE:-dflt}/${JOBHOST_TEST_MAYBE}") == "x/x");
  CHECK(jobhost::interpolate_env("no references, $5 and $HOME stay") == "no references, $5 and $HOME stay");
}

TEST_CASE("a malformed env reference is refused") {
  CHECK_THROWS_WITH(jobhost::interpolate_env("${UNCLOSED"), Contains("unterminated"));
  CHECK_THROWS_WITH(jobhost::interpolate_env("${1BAD}"), Contains("not a variable reference"));
}

TEST_CASE("an interpolated number is converted like a written one") {
  const ScopedEnv size("JOBHOST_TEST_POOL", "24");
  const Config c = parse("postgres: { url: x, pool_size: \"${JOBHOST_TEST_POOL}\" }\nredis: { url: y }\n");
  CHECK(c.postgres_pool_size == 24);
}

TEST_CASE("a relative library path is resolved against the YAML file's folder") {
  const std::string plugin = "plugins:\n  - { name: p, library: ../build/plugins/libp.so }\n";
  CHECK(parse(kRequired + plugin).plugins[0].library == "/etc/build/plugins/libp.so");

  const std::string absolute = "plugins:\n  - { name: p, library: /usr/lib/jobhost/./libp.so }\n";
  CHECK(parse(kRequired + absolute).plugins[0].library == "/usr/lib/jobhost/libp.so");

  // A relative config file name is taken from the working directory.
  const Config c = jobhost::parse_config(kRequired + plugin, "deploy/jobhost.yaml");
  CHECK(c.plugins[0].library ==
        (std::filesystem::current_path() / "build/plugins/libp.so").lexically_normal());
}

TEST_CASE("the shipped config/jobhost.yaml is valid, with every role and the seeds' concurrency") {
  const ScopedEnv db("DATABASE_URL", "postgres://localhost/jobhost");
  const ScopedEnv redis("REDIS_URL", "redis://localhost:6379");
  const auto repo = std::filesystem::absolute(std::filesystem::path(__FILE__)).parent_path() / "../..";
  const Config c = jobhost::load_config(repo / "config/jobhost.yaml");
  CHECK(c.postgres_url == "postgres://localhost/jobhost");
  CHECK(c.redis_url == "redis://localhost:6379");
  CHECK(c.roles == std::set<Role>{Role::kMigrator, Role::kWorker, Role::kReaper, Role::kScheduler, Role::kApi});
  REQUIRE(c.plugins.size() == 8);
  CHECK(c.plugins[0].name == "noop");
  CHECK(c.plugins[0].library == (repo / "build/plugins/libnoop.so").lexically_normal());
  CHECK(c.plugins[0].concurrency_max == 16);
  const auto plugin = [&](const std::string& name) {
    const auto it = std::find_if(c.plugins.begin(), c.plugins.end(), [&](const auto& p) { return p.name == name; });
    REQUIRE(it != c.plugins.end());
    return *it;
  };
  CHECK(plugin("email_send").concurrency_min == 50);
  CHECK(plugin("email_send").concurrency_max == 100);
  CHECK(plugin("email_send").scaling_queue_depth_above == 1000);
  CHECK(plugin("import_contacts").concurrency_min == 2);
  CHECK(plugin("import_contacts").concurrency_max == 5);
  CHECK(plugin("import_contacts").scaling_memory_percent_above == 80.0);
  // One import per tenant at once; at most 4 deliveries per webhook endpoint.
  CHECK(plugin("import_contacts").flow.key_path == std::vector<std::string>{"tenant_id"});
  CHECK(plugin("import_contacts").flow.per_key.concurrency == 1);
  CHECK(plugin("webhook_dispatch").flow.key_path == std::vector<std::string>{"endpoint_id"});
  CHECK(plugin("webhook_dispatch").flow.per_key.concurrency == 4);
  REQUIRE(c.schedules.size() == 2);
  CHECK(c.schedules[0].job_type == "maintenance.cleanup");
  CHECK(c.schedules[1].job_type == "bounce.scan");
  CHECK(plugin("bounce_process").job_types == std::vector<std::string>{"bounce.process", "bounce.scan"});
}

TEST_CASE("load_config reads a file from disk and reports its lines") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("jobhost_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = dir / "jobhost.yaml";
  std::ofstream(file) << kRequired << "plugins:\n  - { name: p, library: libp.so, timeout_ms: 0 }\n";
  CHECK_THROWS_WITH(jobhost::load_config(file),
                    file.string() + ":4: plugins[0].timeout_ms: must be > 0, got 0");

  std::ofstream(file) << kRequired << "plugins:\n  - { name: p, library: libp.so }\n";
  CHECK(jobhost::load_config(file).plugins[0].library == dir / "libp.so");
  std::filesystem::remove_all(dir);
}

TEST_CASE("a missing file is refused naming it and the system's reason") {
  CHECK_THROWS_WITH(jobhost::load_config("/nonexistent/jobhost.yaml"),
                    "/nonexistent/jobhost.yaml: cannot read: No such file or directory");
}

TEST_CASE("role_name gives the name used in the YAML") {
  CHECK(std::string(jobhost::role_name(Role::kMigrator)) == "migrator");
  CHECK(std::string(jobhost::role_name(Role::kWorker)) == "worker");
  CHECK(std::string(jobhost::role_name(Role::kReaper)) == "reaper");
  CHECK(std::string(jobhost::role_name(Role::kScheduler)) == "scheduler");
  CHECK(std::string(jobhost::role_name(Role::kApi)) == "api");
}

// ---- settings → JSON --------------------------------------------------------

TEST_CASE("plugin settings become JSON with the types the YAML scalars look like") {
  const nlohmann::json s = settings_of(
      "{ port: 2525, ratio: 0.25, on: true, off: false, nothing: ~, also_null: null, empty: , "
      "text: hello, quoted_number: \"2525\", quoted_bool: 'true', yes_is_text: yes, "
      "big_negative: -9000000000, list: [1, a, 2.5], nested: { deeper: { x: 1 } } }");
  CHECK(s["port"] == 2525);
  CHECK(s["port"].is_number_integer());
  CHECK(s["ratio"].is_number_float());
  CHECK(s["ratio"].get<double>() == Approx(0.25));
  CHECK(s["on"] == true);
  CHECK(s["off"] == false);
  CHECK(s["nothing"].is_null());
  CHECK(s["also_null"].is_null());
  CHECK(s["empty"].is_null());
  CHECK(s["text"] == "hello");
  CHECK(s["quoted_number"] == "2525");
  CHECK(s["quoted_bool"] == "true");
  CHECK(s["yes_is_text"] == "yes");
  CHECK(s["big_negative"] == -9000000000LL);
  CHECK(s["list"] == nlohmann::json::array({1, "a", 2.5}));
  CHECK(s["nested"]["deeper"]["x"] == 1);
}

TEST_CASE("plugin settings keep the author's key order and are interpolated") {
  const ScopedEnv host("JOBHOST_TEST_SMTP_PORT", "2526");
  const Config c = parse(kRequired +
                         "plugins:\n  - name: p\n    library: /p.so\n"
                         "    settings:\n"
                         "      zeta: 1\n"
                         "      alpha: \"${JOBHOST_TEST_SMTP_PORT}\"\n"
                         // Unquoted ${...} only works in block style: braces end a flow mapping.
                         "      port: ${JOBHOST_TEST_SMTP_PORT}\n");
  CHECK(c.plugins[0].settings_json == R"({"zeta":1,"alpha":"2526","port":2526})");
}

TEST_CASE("settings that are not a mapping are refused") {
  CHECK(error_of(kRequired + "plugins:\n  - name: p\n    library: /p.so\n    settings: [a, b]\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].settings: must be a mapping (key: value pairs)");
}

// ---- cron -------------------------------------------------------------------

TEST_CASE("valid cron expressions are accepted") {
  for (const char* cron : {"* * * * *", "*/15 * * * *", "0 3 * * *", "0 9-17 * * 1-5",
                           "0,30 8-18/2 1,15 1,6,12 7", "59 23 31 12 0", "  5   4  *  *  *  "}) {
    INFO(cron);
    CHECK(cron_error(cron) == "(accepted)");
  }
}

TEST_CASE("invalid cron expressions are refused naming the field and the line") {
  const std::string prefix = "/etc/jobhost/test.yaml:4: schedules[0].cron: ";
  CHECK(cron_error("* * * *") ==
        prefix + "must have 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; got 4");
  CHECK(cron_error("0 0 30 2 *") == prefix + "cron \"0 0 30 2 *\" has no tick within eight years");
  CHECK(cron_error("60 * * * *") == prefix + "field 1 (minute) \"60\": 60 is out of range 0-59");
  CHECK(cron_error("0 24 * * *") == prefix + "field 2 (hour) \"24\": 24 is out of range 0-23");
  CHECK(cron_error("0 0 0 * *") == prefix + "field 3 (day of month) \"0\": 0 is out of range 1-31");
  CHECK(cron_error("0 0 * 13 *") == prefix + "field 4 (month) \"13\": 13 is out of range 1-12");
  CHECK(cron_error("0 0 * * 8") == prefix + "field 5 (day of week) \"8\": 8 is out of range 0-7");
  CHECK_THAT(cron_error("*/0 * * * *"), StartsWith(prefix + "field 1 (minute)") && Contains("step"));
  CHECK_THAT(cron_error("5/10 * * * *"),
             StartsWith(prefix + "field 1") && Contains("a step follows * or a range"));
  CHECK_THAT(cron_error("30-10 * * * *"), StartsWith(prefix + "field 1") && Contains("runs backwards"));
  CHECK_THAT(cron_error("1,,2 * * * *"), StartsWith(prefix + "field 1") && Contains("empty item"));
  CHECK_THAT(cron_error("x * * * *"), StartsWith(prefix + "field 1") && Contains("\"x\" is not a number"));
  CHECK_THAT(cron_error("0 0 * JAN *"), StartsWith(prefix + "field 4 (month)"));
}

TEST_CASE("a schedule without a job type or cron is refused") {
  CHECK(error_of(kRequired + "schedules:\n  - { cron: \"* * * * *\" }\n") ==
        "/etc/jobhost/test.yaml:4: schedules[0].job_type: is required");
  CHECK(error_of(kRequired + "schedules:\n  - job_type: t\n    cron: \"\"\n") ==
        "/etc/jobhost/test.yaml:5: schedules[0].cron: must not be empty");
}

// ---- errors: file, line and key ---------------------------------------------

TEST_CASE("a YAML syntax error names the file and line") {
  const std::string message = error_of(kRequired + "host:\n  roles: [worker\n  lease: {}\n");
  CHECK_THAT(message, StartsWith("/etc/jobhost/test.yaml:5: "));
  CHECK_THAT(message, Contains("end of sequence flow not found"));
}

TEST_CASE("a missing or empty required URL is refused naming the key") {
  CHECK(error_of("redis: { url: r }\n") == "/etc/jobhost/test.yaml:1: postgres.url: is required");
  CHECK(error_of("") == "/etc/jobhost/test.yaml:1: postgres.url: is required");
  CHECK(error_of("postgres: { url: p }\nredis:\n  key_prefix: x\n") ==
        "/etc/jobhost/test.yaml:3: redis.url: is required");
  const ScopedEnv empty("JOBHOST_TEST_EMPTY_URL", "");
  CHECK(error_of("postgres:\n  url: \"${JOBHOST_TEST_EMPTY_URL}\"\nredis: { url: r }\n") ==
        "/etc/jobhost/test.yaml:2: postgres.url: must not be empty");
}

TEST_CASE("an unset env variable without a default is refused naming it, the key and the line") {
  ::unsetenv("JOBHOST_TEST_NOT_SET");
  const std::string message =
      error_of(kRequired + "api:\n  listen: 127.0.0.1:1\n  token: \"Bearer ${JOBHOST_TEST_NOT_SET}\"\n");
  CHECK_THAT(message, StartsWith("/etc/jobhost/test.yaml:5: api.token: "));
  CHECK_THAT(message, Contains("JOBHOST_TEST_NOT_SET is not set"));
}

TEST_CASE("a non-integer where an integer belongs is refused quoting the bad value") {
  CHECK(error_of(kRequired + "host:\n  migrator:\n    batch_size: abc\n") ==
        "/etc/jobhost/test.yaml:5: host.migrator.batch_size: must be an integer, got \"abc\"");
  CHECK(error_of(kRequired + "host:\n  shutdown_grace_ms: 1.5\n") ==
        "/etc/jobhost/test.yaml:4: host.shutdown_grace_ms: must be an integer, got \"1.5\"");
  CHECK(error_of(kRequired + "host:\n  lease: { duration_ms: [1] }\n") ==
        "/etc/jobhost/test.yaml:4: host.lease.duration_ms: must be a single value, not a list or mapping");
}

TEST_CASE("numbers out of their sane range are refused naming the key and line") {
  CHECK(error_of("postgres: { url: p, pool_size: 0 }\nredis: { url: r }\n") ==
        "/etc/jobhost/test.yaml:1: postgres.pool_size: must be between 1 and 1000, got 0");
  CHECK(error_of(kRequired + "host:\n  migrator: { batch_size: 100001 }\n") ==
        "/etc/jobhost/test.yaml:4: host.migrator.batch_size: must be between 1 and 100000, got 100001");
  CHECK(error_of(kRequired + "host:\n  reaper:\n    interval_ms: 0\n") ==
        "/etc/jobhost/test.yaml:5: host.reaper.interval_ms: must be > 0, got 0");
  CHECK(error_of(kRequired + "host:\n  reconciler: { stale_after_ms: -5 }\n") ==
        "/etc/jobhost/test.yaml:4: host.reconciler.stale_after_ms: must be > 0, got -5");
}

TEST_CASE("a heartbeat not shorter than the lease is refused at the key that was written") {
  CHECK(error_of(kRequired + "host:\n  lease:\n    duration_ms: 10000\n    heartbeat_ms: 10000\n") ==
        "/etc/jobhost/test.yaml:6: host.lease.heartbeat_ms: must be below duration_ms (10000), got 10000");
  CHECK(error_of(kRequired + "host:\n  lease:\n    duration_ms: 8000\n") ==
        "/etc/jobhost/test.yaml:5: host.lease.duration_ms: must be above heartbeat_ms (10000, the default), "
        "got 8000");
}

TEST_CASE("a plugin with max below min is refused naming the key and line") {
  const std::string yaml = kRequired +
                           "plugins:\n"
                           "  - name: import\n"
                           "    library: /p.so\n"
                           "    concurrency:\n"
                           "      min: 5\n"
                           "      max: 2\n";
  CHECK(error_of(yaml) == "/etc/jobhost/test.yaml:8: plugins[0].concurrency.max: must be >= min (5), got 2");
  CHECK_THAT(error_of(kRequired + "plugins:\n  - { name: p, library: /p.so, concurrency: { min: 4 } }\n"),
             StartsWith("/etc/jobhost/test.yaml:4: plugins[0].concurrency.max: must be >= min (4), got 1") &&
                 Contains("default"));
  CHECK(error_of(kRequired + "plugins:\n  - { name: p, library: /p.so, concurrency: { max: 0 } }\n") ==
        "/etc/jobhost/test.yaml:4: plugins[0].concurrency.max: must be between 1 and 10000, got 0");
}

TEST_CASE("plugin retry, timeout and scaling values out of range are refused") {
  const std::string head = kRequired + "plugins:\n  - name: p\n    library: /p.so\n";
  CHECK(error_of(head + "    retry: { max_attempts: 0 }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].retry.max_attempts: must be between 1 and 2147483647, got 0");
  CHECK(error_of(head + "    retry: { base_ms: -1 }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].retry.base_ms: must be >= 0, got -1");
  CHECK(error_of(head + "    retry:\n      base_ms: 5000\n      max_ms: 1000\n") ==
        "/etc/jobhost/test.yaml:8: plugins[0].retry.max_ms: must be >= base_ms (5000), got 1000");
  CHECK(error_of(head + "    timeout_ms: 0\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].timeout_ms: must be > 0, got 0");
  CHECK(error_of(head + "    scaling: { memory_percent_above: 120 }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].scaling.memory_percent_above: must be a percentage above 0 and "
        "at "
        "most 100, got 120");
  CHECK(error_of(head + "    scaling: { memory_percent_above: 0 }\n") != "(accepted)");
  CHECK(error_of(head + "    scaling: { memory_percent_above: lots }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].scaling.memory_percent_above: must be a number, got \"lots\"");
}

TEST_CASE("a plugin without a name or library is refused") {
  CHECK(error_of(kRequired + "plugins:\n  - library: /p.so\n") ==
        "/etc/jobhost/test.yaml:4: plugins[0].name: is required");
  CHECK(error_of(kRequired + "plugins:\n  - name: a\n    library: /a.so\n  - name: b\n") ==
        "/etc/jobhost/test.yaml:6: plugins[1].library: is required");
  CHECK(error_of(kRequired + "plugins:\n  - name: p\n    library: /p.so\n    job_types: [a, \"\"]\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].job_types[1]: must not be empty");
}

TEST_CASE("an unknown key is refused naming it, with a suggestion when one is close") {
  CHECK(error_of(kRequired + "plugins:\n  - name: p\n    library: /p.so\n    concurency: { max: 2 }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].concurency: unknown key; did you mean \"concurrency\"?");
  CHECK(error_of(kRequired + "host:\n  lease: { duration_ms: 1000, heartbeat: 10 }\n") ==
        "/etc/jobhost/test.yaml:4: host.lease.heartbeat: unknown key; did you mean \"heartbeat_ms\"?");
  CHECK(error_of(kRequired + "workers: 4\n") ==
        "/etc/jobhost/test.yaml:3: workers: unknown key; expected one of: postgres, redis, host, api, log, "
        "schedules, plugins, limiters");
}

TEST_CASE("a key written twice in one mapping is refused") {
  CHECK(error_of(kRequired + "log:\n  level: info\n  level: debug\n") ==
        "/etc/jobhost/test.yaml:5: log.level: given twice (first at line 4)");
}

TEST_CASE("an unknown role is refused listing the valid ones") {
  CHECK(error_of(kRequired + "host:\n  roles: [worker, wroker]\n") ==
        "/etc/jobhost/test.yaml:4: host.roles[1]: unknown role \"wroker\"; valid roles are migrator, worker, "
        "reaper, scheduler, api");
  CHECK_THAT(error_of(kRequired + "host:\n  roles: []\n"),
             StartsWith("/etc/jobhost/test.yaml:4: host.roles: must name at least one role"));
  CHECK_THAT(error_of(kRequired + "host:\n  roles: worker\n"),
             StartsWith("/etc/jobhost/test.yaml:4: host.roles: must be a list"));
}

TEST_CASE("a bad log format or level is refused listing the choices") {
  CHECK(error_of(kRequired + "log: { format: xml }\n") ==
        "/etc/jobhost/test.yaml:3: log.format: must be one of text, json; got \"xml\"");
  CHECK(
      error_of(kRequired + "log:\n  level: verbose\n") ==
      "/etc/jobhost/test.yaml:4: log.level: must be one of trace, debug, info, warn, error; got \"verbose\"");
}

TEST_CASE("two plugins with the same name are refused") {
  const std::string yaml = kRequired +
                           "plugins:\n"
                           "  - { name: email, library: /a.so }\n"
                           "  - name: email\n"
                           "    library: /b.so\n";
  CHECK(error_of(yaml) ==
        "/etc/jobhost/test.yaml:5: plugins[1].name: duplicate plugin name \"email\" (first at line 4)");
}

TEST_CASE("two plugins claiming the same job type are refused naming both") {
  const std::string yaml = kRequired +
                           "plugins:\n"
                           "  - { name: a, library: /a.so, job_types: [x.one, x.two] }\n"
                           "  - name: b\n"
                           "    library: /b.so\n"
                           "    job_types:\n"
                           "      - y.one\n"
                           "      - x.two\n";
  CHECK(error_of(yaml) ==
        "/etc/jobhost/test.yaml:9: plugins[1].job_types[1]: job type \"x.two\" is already claimed by plugin "
        "\"a\" (line 4); each job type belongs to one plugin");
  CHECK(error_of(kRequired + "plugins:\n  - { name: a, library: /a.so, job_types: [t, t] }\n") ==
        "/etc/jobhost/test.yaml:4: plugins[0].job_types[1]: job type \"t\" listed twice");
}

TEST_CASE("a section of the wrong shape is refused naming it") {
  CHECK(error_of(kRequired + "host: 5\n") ==
        "/etc/jobhost/test.yaml:3: host: must be a mapping (key: value pairs)");
  CHECK(error_of(kRequired + "plugins: { name: p }\n") ==
        "/etc/jobhost/test.yaml:3: plugins: must be a list");
  CHECK_THAT(error_of("just text\n"),
             StartsWith("/etc/jobhost/test.yaml:1: the top level must be a mapping"));
}

TEST_CASE("api: listeners, connection limits, timeouts and rate limits are read, with defaults") {
  const Config d = parse(kRequired);
  CHECK(d.api_health_listen.empty());
  CHECK(d.api_limits == jobhost::ApiLimits{});
  CHECK(d.api_limits.max_connections == 2048);
  CHECK(d.api_limits.max_body_bytes == 1 << 20);
  CHECK(d.api_limits.client_per_s == 200);

  const Config c = parse(kRequired +
                         "api:\n"
                         "  listen: 127.0.0.1:8080\n"
                         "  health_listen: 0.0.0.0:8081\n"
                         "  max_connections: 500\n"
                         "  max_connections_per_client: 20\n"
                         "  header_timeout_ms: 1500\n"
                         "  body_timeout_ms: 4000\n"
                         "  idle_timeout_ms: 2500\n"
                         "  max_body_bytes: 65536\n"
                         "  threads: 4\n"
                         "  queue: 32\n"
                         "  rate_limit:\n"
                         "    per_client: { requests_per_s: 50 }\n"
                         "    per_token: { requests_per_s: 0.5, burst: 3 }\n");
  CHECK(c.api_health_listen == "0.0.0.0:8081");
  const jobhost::ApiLimits& l = c.api_limits;
  CHECK(l.max_connections == 500);
  CHECK(l.max_connections_per_client == 20);
  CHECK(l.header_timeout_ms == 1500);
  CHECK(l.body_timeout_ms == 4000);
  CHECK(l.idle_timeout_ms == 2500);
  CHECK(l.max_body_bytes == 65536);
  CHECK(l.threads == 4);
  CHECK(l.queue == 32);
  CHECK(l.client_per_s == 50);
  CHECK(l.client_burst == 100);  // twice the rate when not given
  CHECK(l.token_per_s == 0.5);
  CHECK(l.token_burst == 3);
  CHECK(parse(kRequired + "api:\n  rate_limit: { per_client: { requests_per_s: 0 } }\n")
            .api_limits.client_per_s == 0);
  CHECK(parse(kRequired + "api: { listen: \"127.0.0.1:0\", health_listen: \"127.0.0.1:0\" }\n")
            .api_health_listen == "127.0.0.1:0");  // two free ports
}

TEST_CASE("api: bad limits are refused naming the file, line and key") {
  CHECK(error_of(kRequired + "api:\n  listen: 127.0.0.1:1\n  health_listen: 127.0.0.1:1\n") ==
        "/etc/jobhost/test.yaml:5: api.health_listen: must differ from api.listen (127.0.0.1:1)");
  CHECK(error_of(kRequired + "api:\n  max_connections: 0\n") ==
        "/etc/jobhost/test.yaml:4: api.max_connections: must be between 1 and 1000000, got 0");
  CHECK(error_of(kRequired + "api:\n  max_connections: 10\n  max_connections_per_client: 11\n") ==
        "/etc/jobhost/test.yaml:5: api.max_connections_per_client: must be <= max_connections (10), got 11");
  CHECK(error_of(kRequired + "api:\n  max_connections: 100\n") ==
        "/etc/jobhost/test.yaml:4: api.max_connections_per_client: must be <= max_connections (100), got 128 "
        "(the default); set max_connections_per_client");
  CHECK(error_of(kRequired + "api:\n  header_timeout_ms: 5\n") ==
        "/etc/jobhost/test.yaml:4: api.header_timeout_ms: must be between 10 and 3600000, got 5");
  CHECK(error_of(kRequired + "api:\n  max_body_bytes: 10\n") ==
        "/etc/jobhost/test.yaml:4: api.max_body_bytes: must be between 1024 and 1073741824, got 10");
  CHECK(error_of(kRequired + "api:\n  threads: 0\n") ==
        "/etc/jobhost/test.yaml:4: api.threads: must be between 1 and 256, got 0");
  CHECK(
      error_of(kRequired + "api:\n  rate_limit: { per_client: { requests_per_s: -1 } }\n") ==
      "/etc/jobhost/test.yaml:4: api.rate_limit.per_client.requests_per_s: must be between 0 and 1000000000, "
      "got -1");
  CHECK(error_of(kRequired + "api:\n  rate_limit: { per_token: { requests_per_s: 5, burst: 0 } }\n") ==
        "/etc/jobhost/test.yaml:4: api.rate_limit.per_token.burst: must be >= 1 while requests_per_s is "
        "above 0");
  CHECK(
      error_of(kRequired + "api:\n  rate_limit: { per_ip: {} }\n") ==
      "/etc/jobhost/test.yaml:4: api.rate_limit.per_ip: unknown key; expected one of: per_client, per_token");
  CHECK(error_of(kRequired + "api:\n  header_timeout: 100\n") ==
        "/etc/jobhost/test.yaml:4: api.header_timeout: unknown key; did you mean \"header_timeout_ms\"?");
}

TEST_CASE("a flow: block and limiters: are read with their defaults, and mistakes are named") {
  const std::string plugin = "plugins:\n  - name: p\n    library: libp.so\n";
  const Config c = parse(kRequired + plugin +
                         "    flow:\n      key: /tenant/id~1x\n      concurrency: 200\n"
                         "      rate: { limit: 500, per_ms: 1000 }\n"
                         "      per_key: { concurrency: 20, rate: { limit: 50, per_ms: 1000, burst: 5 } }\n"
                         "      overrides:\n        big: { concurrency: 50 }\n"
                         "limiters:\n  \"relay:primary\": { rate: { limit: 14, per_ms: 1000 }, concurrency: 10 }\n"
                         "  \"domain:*\": { rate: { limit: 20, per_ms: 1000 } }\n");
  const jobhost::FlowConfig& f = c.plugins.at(0).flow;
  CHECK(f.enabled);
  CHECK(f.fair);
  CHECK(f.key_path == std::vector<std::string>{"tenant", "id/x"});
  CHECK(f.queue.concurrency == 200);
  REQUIRE(f.queue.rate);
  CHECK(f.queue.rate->burst == 500);  // the limit when not given
  CHECK(f.for_key("big").concurrency == 50);
  REQUIRE(f.for_key("big").rate);
  CHECK(f.for_key("big").rate->burst == 5);  // the rest from per_key
  CHECK(f.for_key("other").concurrency == 20);
  CHECK(f.counts_running());
  REQUIRE(c.limiters.size() == 2);
  CHECK(jobhost::find_limiter(c.limiters, "relay:primary") == &c.limiters[0]);
  CHECK(jobhost::find_limiter(c.limiters, "domain:gmail.com") == &c.limiters[1]);
  CHECK(jobhost::find_limiter(c.limiters, "domain:") == nullptr);
  CHECK(jobhost::find_limiter(c.limiters, "relay:backup") == nullptr);
  CHECK_FALSE(parse(kRequired + plugin).plugins.at(0).flow.enabled);

  CHECK(error_of(kRequired + plugin + "    flow: { key: tenant_id }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].flow.key: must be a JSON pointer starting with '/', such as "
        "/tenant_id; got 'tenant_id'");
  CHECK(error_of(kRequired + plugin + "    flow: { rate: { per_ms: 1000 } }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].flow.rate.limit: is required");
  CHECK(error_of(kRequired + plugin + "    flow: { per_key: { concurency: 2 } }\n") ==
        "/etc/jobhost/test.yaml:6: plugins[0].flow.per_key.concurency: unknown key; did you mean \"concurrency\"?");
  CHECK(error_of(kRequired + "limiters:\n  \"a*b\": { concurrency: 1 }\n") ==
        "/etc/jobhost/test.yaml:4: limiters.a*b: '*' may only end a name (\"domain:*\" matches every name "
        "starting \"domain:\")");
  CHECK(error_of(kRequired + "limiters:\n  x: {}\n") ==
        "/etc/jobhost/test.yaml:4: limiters.x: needs a concurrency: or a rate:");
}
