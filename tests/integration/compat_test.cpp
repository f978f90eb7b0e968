// Plugin ABI compatibility (DESIGN §4.1): a plugin built against the SDK of ABI
// 1.0 runs unchanged in today's host, a plugin in plain C runs too, and a
// plugin that needs a newer minor than the host's is refused naming both.
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "jobhost/abi.h"

using namespace jobhost::test;

namespace {

std::string plugin_entry(const std::string& name, const std::string& library, const std::string& types,
                         const std::string& settings = "{}") {
  return "  - name: " + name + "\n    library: " + plugin_dir() + "/" + library + "\n    job_types: [" + types +
         "]\n    concurrency: { min: 1, max: 4 }\n    retry: { max_attempts: 3, base_ms: 50, max_ms: 500 }\n"
         "    settings: " + settings + "\n";
}

std::string abi_text(uint32_t v) {
  return std::to_string(JOBHOST_ABI_MAJOR_OF(v)) + "." + std::to_string(JOBHOST_ABI_MINOR_OF(v));
}

}  // namespace

TEST_CASE("a plugin built against the ABI 1.0 SDK headers runs unchanged in today's host", "[compat]") {
  const std::string library = plugin_dir() + "/libcompat_abi1.so";
  const auto [icode, iout] = run({bin_dir() + "/jobctl", "plugin", "inspect", library});
  INFO(iout);
  CHECK(icode == 0);
  CHECK_THAT(iout, Catch::Contains("abi           1.0 (this host loads 1.0 to " + abi_text(JOBHOST_ABI_VERSION)) &&
                       Catch::Contains("loadable      yes") && Catch::Contains("compat.v1"));

  TestDb db;
  HostOptions o;
  o.extra_yaml = plugin_entry("compat_v1", "libcompat_abi1.so", "compat.v1", "{ tag: old-team }");
  auto host = start_host(write_config(db, o));
  const auto ok = db.enqueue("compat.v1", R"({"mode": "ok"})");
  const auto follow = db.enqueue("compat.v1", R"({"mode": "enqueue"})");
  const auto later = db.enqueue("compat.v1", R"({"mode": "retry_after"})");
  const auto perm = db.enqueue("compat.v1", R"({"mode": "permanent"})");
  const auto thrown = db.enqueue("compat.v1", R"({"mode": "throw"})");
  const auto invalid = db.enqueue("compat.v1", R"({"mode": 5})");
  REQUIRE(eventually([&] {
    return db.status(ok) == "completed" && db.status(follow) == "completed" && db.status(later) == "completed" &&
           db.status(perm) == "failed" && db.status(thrown) == "failed" && db.status(invalid) == "failed";
  }, 30s));
  // The follow-up went through the 1.0 enqueue call with the priority asked for.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop' AND priority = 7 AND "
                 "payload = jsonb_build_object('from', '" + follow + "')") == 1);
  // Retry-after honoured: attempt 2 started at least 700 ms after attempt 1 ended.
  CHECK(db.retry_gap_ms(later, 1) >= 650);
  CHECK(db.field(perm, "attempt_count") == "1");
  CHECK(db.field(perm, "last_error_message") == "v1 says no");
  CHECK(db.field(thrown, "attempt_count") == "3");
  CHECK_THAT(db.field(thrown, "last_error_message"), Catch::Contains("v1 threw"));
  CHECK_THAT(db.field(invalid, "last_error_message"), Catch::Contains("payload.mode: must be a string"));
  // It was shown the callback table of ABI 1.0, whose abi_version is the plain 1.
  CHECK_THAT(host->log(), Catch::Contains("old-team: host api abi_version=1\n") ||
                              Catch::Contains("old-team: host api abi_version=1\r"));
  CHECK_THAT(host->log(), Catch::Contains("plugin compat_v1 1.0.0 loaded"));
}

TEST_CASE("a plugin written in plain C against abi.h alone loads and runs", "[compat]") {
  TestDb db;
  HostOptions o;
  o.extra_yaml = plugin_entry("compat_c", "libcompat_c.so", "compat.c");
  auto host = start_host(write_config(db, o));
  const auto good = db.enqueue("compat.c", "{}", 42);
  const auto failing = db.enqueue("compat.c", R"({"fail": 1})");
  const auto refused = db.enqueue("compat.c", R"({"bad": 1})");
  REQUIRE(eventually([&] {
    return db.status(good) == "completed" && db.status(failing) == "failed" && db.status(refused) == "failed";
  }, 30s));
  // enqueue_job (ABI 1.1): the follow-up carries the job's own priority in its
  // payload, the priority asked for, and the job id as its unique key.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop' AND priority = 3 AND unique_key = '" +
                 good + "' AND payload = jsonb_build_object('from_c', '" + good + "', 'priority', 42)") == 1);
  CHECK(db.field(failing, "last_error_message") == "c_plugin: asked to fail");
  CHECK(db.field(failing, "attempt_count") == "1");
  CHECK_THAT(db.field(refused, "last_error_message"), Catch::Contains("\"bad\" is not accepted by the C plugin"));
  CHECK_THAT(host->log(), Catch::Contains("c_plugin: job " + good + " priority 42 attempt 1/3"));

  // Its own settings check is reported like any plugin's.
  HostOptions bad;
  bad.extra_yaml = plugin_entry("compat_c", "libcompat_c.so", "compat.c", "{ unknown: 1 }");
  const auto [code, out] = run({bin_dir() + "/jobhost", "--check-config", write_config(db, bad, "bad")});
  CHECK(code != 0);
  CHECK_THAT(out, Catch::Contains("settings.unknown: unknown key"));
}

TEST_CASE("a plugin that needs a newer ABI minor than the host's is refused naming both versions", "[compat]") {
  TestDb db;
  HostOptions o;
  o.library = plugin_dir() + "/libfuture_minor.so";
  const std::string host_abi = abi_text(JOBHOST_ABI_VERSION);
  const std::string plugin_abi = std::to_string(JOBHOST_ABI_MAJOR) + "." + std::to_string(JOBHOST_ABI_MINOR + 1);
  const auto [code, out] = run({bin_dir() + "/jobhost", "--config", write_config(db, o)});
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("built for plugin ABI " + plugin_abi + ", newer than this host's plugin ABI " +
                                  host_abi) &&
                      Catch::Contains("upgrade jobhost"));
  const auto [icode, iout] = run({bin_dir() + "/jobctl", "plugin", "inspect", o.library});
  CHECK(icode == 1);
  CHECK_THAT(iout, Catch::Contains("abi           " + plugin_abi) && Catch::Contains("loadable      no"));
}
