// The dashboard, end to end in headless Chromium (tests/dashboard/dashboard.mjs,
// playwright-core driving Debian's /usr/bin/chromium) against a real host.
#include <filesystem>
#include <regex>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

TEST_CASE("dashboard: numbers move while jobs run, and a DLQ job is replayed by clicking", "[api][dashboard]") {
  const std::string script = source_dir() + "/tests/dashboard/dashboard.mjs";
  REQUIRE(std::filesystem::exists(source_dir() + "/tests/dashboard/node_modules/playwright-core"));
  TestDb db;
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  o.extra_yaml = "api: { listen: \"127.0.0.1:0\", token: \"dash-token-0123456789\" }\n";
  auto host = start_host(write_config(db, o, "dash"), "dash");
  std::smatch m;
  const std::string log = host->log();
  REQUIRE(std::regex_search(log, m, std::regex("api listening on (127\\.0\\.0\\.1:[0-9]+)")));
  // JOBHOST_SCREENSHOTS=DIR saves the pictures there (the README's are in docs/).
  const char* shots = std::getenv("JOBHOST_SCREENSHOTS");
  std::vector<std::string> argv{"/usr/bin/node", script, "http://" + m[1].str(), "dash-token-0123456789"};
  if (shots != nullptr) argv.push_back(shots);
  const auto [code, out] = run(argv, {}, 120s);
  INFO(out);
  REQUIRE(code == 0);
  std::smatch r;
  REQUIRE(std::regex_search(out, r, std::regex("replayed ([0-9a-f-]{36})")));
  // The click reached the database: the job ran a second time.
  const std::string id = r[1];
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") == 2; }, 20s));
}
