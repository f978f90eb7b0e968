// Hot reload on SIGHUP (DESIGN §5), under load: resize a pool, add a plugin,
// swap a plugin's library for a new build, remove a plugin, and send an
// invalid config; no job is lost or run twice, and each outcome is counted.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <catch2/catch.hpp>
#include <httplib.h>

#include "harness.hpp"

using namespace jobhost::test;
namespace fs = std::filesystem;

namespace {

std::string echo_entry(const std::string& library) {
  return "  - name: echo\n"
         "    library: " + library + "\n"
         "    job_types: [echo]\n"
         "    concurrency: { min: 1, max: 4 }\n"
         "    timeout_ms: 10000\n";
}

size_t occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("reload: pool size, plugin added, library swapped, plugin removed, bad config: no job lost or run twice",
          "[reload]") {
  TestDb db;
  const fs::path dir = fs::temp_directory_path() / (db.prefix() + "-reload");
  fs::create_directories(dir);
  const std::string echo_lib = (dir / "libecho.so").string();
  fs::copy_file(plugin_dir() + "/libecho_v1.so", echo_lib);

  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  o.concurrency = 4;
  const std::string api = "api: { listen: \"127.0.0.1:0\", token: \"reload-token-0123456789\" }\n";
  o.extra_yaml = api;
  const std::string config = write_config(db, o, "reload");
  auto host = start_host(config, "reload");
  const auto reloaded = [&](const std::string& what, size_t nth) {
    host->signal(SIGHUP);
    return eventually([&] { return occurrences(host->log(), what) >= nth; }, 15s);
  };

  // Load for the whole test: 3000 jobs of 3 ms on 4 workers.
  db.enqueue_many("noop", R"({"sleep_ms": 3})", 3000);

  // 1. Resize the noop pool in place.
  o.concurrency = 8;
  write_config(db, o, "reload");
  REQUIRE(reloaded("reload applied: added [], replaced [], removed [], resized [noop]", 1));

  // 2. Add a plugin; its jobs run on version 1.
  o.extra_yaml = echo_entry(echo_lib) + api;
  write_config(db, o, "reload");
  REQUIRE(reloaded("reload applied: added [echo]", 1));
  for (int i = 0; i < 20; ++i) db.enqueue("echo", R"({"sleep_ms": 50})");
  REQUIRE(eventually([&] { return occurrences(host->log(), "echo 1.0.0 ran") >= 5; }, 20s));

  // 3. A new build lands at the same path (written aside, renamed over it, as
  //    deploy tools do); jobs in flight finish on 1.0.0, new ones run 2.0.0.
  for (int i = 0; i < 20; ++i) db.enqueue("echo", R"({"sleep_ms": 300})");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'echo' AND status = 'running'") > 0; }, 20s));
  fs::copy_file(plugin_dir() + "/libecho_v2.so", dir / "libecho.so.new");
  fs::rename(dir / "libecho.so.new", echo_lib);
  REQUIRE(reloaded("reload applied: added [], replaced [echo]", 1));
  REQUIRE(host->wait_for_log("plugin echo 1.0.0: drained after the reload", 20s));
  for (int i = 0; i < 20; ++i) db.enqueue("echo");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'echo' AND status <> 'completed'") == 0; }, 30s));
  CHECK(occurrences(host->log(), "echo 2.0.0 ran") >= 20);

  // 4. Remove the plugin: its jobs wait, unharmed, for a host that serves them.
  o.extra_yaml = api;
  write_config(db, o, "reload");
  REQUIRE(reloaded("removed [echo]", 1));
  REQUIRE(host->wait_for_log("plugin echo 2.0.0: drained after the reload", 20s));
  const std::string waiting = db.enqueue("echo");
  std::this_thread::sleep_for(1500ms);
  CHECK(db.status(waiting) != "completed");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + waiting + "'") == 0);

  // 5. An invalid config is refused; the host carries on with the old one.
  { std::ofstream(config, std::ios::app) << "plugins: [unclosed\n"; }
  REQUIRE(reloaded("reload rejected, the running configuration stays", 1));
  CHECK(host->running());

  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop' AND status = 'completed'") == 3000; }, 60s));
  INFO(host->log());
  // Exactly once: every finished job has one log row, for attempt 1.
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE attempt_number <> 1 OR status <> 'completed'") == 0);
  CHECK(db.count("SELECT count(*) FROM (SELECT job_id FROM jobhost.job_logs GROUP BY job_id HAVING count(*) > 1) d") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == 3000 + 60);

  std::smatch m;
  const std::string log = host->log();
  REQUIRE(std::regex_search(log, m, std::regex("api listening on 127\\.0\\.0\\.1:([0-9]+)")));
  httplib::Client client("127.0.0.1", std::stoi(m[1]));
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK_THAT(metrics->body, Catch::Contains("config_reloads_total{result=\"applied\"} 4"));
  CHECK_THAT(metrics->body, Catch::Contains("config_reloads_total{result=\"rejected\"} 1"));
  fs::remove_all(dir);
}
