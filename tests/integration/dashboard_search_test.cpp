// The dashboard's job search end to end in headless Chromium
// (tests/dashboard/search.mjs): search → job page → bulk replay, with reads
// protected by a token, against a real host that then runs the replayed jobs.
#include <cstdlib>
#include <filesystem>

#include <catch2/catch.hpp>

#include "api_host.hpp"

using namespace jobhost::test;

TEST_CASE("dashboard: a search finds failed jobs, a job page shows their attempts, and bulk replay runs them again",
          "[api][dashboard][search]") {
  const std::string script = source_dir() + "/tests/dashboard/search.mjs";
  REQUIRE(std::filesystem::exists(source_dir() + "/tests/dashboard/node_modules/playwright-core"));
  TestDb db;
  // Five dead-lettered noop jobs with one failed attempt each, and others that must not be touched.
  db.scalar("INSERT INTO jobhost.jobs (queue_name, status, payload, attempt_count, max_attempts, failed_at, "
            "last_error_message) SELECT 'noop', 'failed', '{\"marker\": \"search-test\"}', 1, 1, now(), "
            "'smtp 550: mailbox unavailable' FROM generate_series(1, 5)");
  db.scalar("INSERT INTO jobhost.job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, "
            "duration) SELECT id, 'failed', 'smtp 550: mailbox unavailable', 1, now() - interval '2 seconds', "
            "now() - interval '1.9 seconds', interval '100 ms' FROM jobhost.jobs");
  db.scalar("INSERT INTO jobhost.jobs (queue_name, status, max_attempts, failed_at) "
            "SELECT 'other.type', 'failed', 1, now() FROM generate_series(1, 3)");
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  ApiProcess api(db, o, "  token: \"dash-write-0123456789\"\n  read_token: \"dash-read-0123456789\"\n", "dash");
  const char* shots = std::getenv("JOBHOST_SCREENSHOTS");
  std::vector<std::string> argv{"/usr/bin/node", script, "http://127.0.0.1:" + std::to_string(api.port()),
                                "dash-write-0123456789", "noop", "5"};
  if (shots != nullptr) argv.push_back(shots);
  const auto [code, out] = run(argv, {}, 120s);
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("bulk replayed 5"));
  // The replay reached the database: each ran again, and only those.
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop' AND status = 'completed'") == 5;
  }, 30s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'other.type' AND status = 'failed'") == 3);
  CHECK(db.scalar("SELECT actor || ' ' || action || ' ' || count || ' ' || (detail->'filter')::text "
                  "FROM jobhost.audit_log") == R"(api.token jobs.bulk_replay 5 {"type": "noop", "status": ["failed"]})");
}
