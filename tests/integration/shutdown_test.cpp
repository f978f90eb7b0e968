// Invariant 7: SIGTERM stops fetching, lets running jobs finish, hands back
// leased jobs that never started, writes everything, and exits 0.
#include <signal.h>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

TEST_CASE("SIGTERM lets in-flight jobs finish and loses none", "[shutdown]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 4;
  o.shutdown_grace_ms = 10000;
  const auto config = write_config(db, o);
  auto host = start_host(config);
  db.enqueue_many("noop", R"({"sleep_ms": 1500})", 12);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'running'") == 4; }, 20s));
  host->signal(SIGTERM);
  REQUIRE(host->wait(20s) == 0);
  // The four that were running finished; nothing is left claimed by the dead host.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") >= 4);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'running'") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status <> 'completed'") == 0);
  CHECK_THAT(host->log(), Catch::Contains("stopped"));

  auto again = start_host(config, "again");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 12; }, 40s));
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == 12);
  CHECK(db.count("SELECT max(attempt_count) FROM jobhost.jobs") == 1);
}

TEST_CASE("a job still running when the grace period ends is retried, not lost", "[shutdown]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 1;
  o.shutdown_grace_ms = 300;
  const auto config = write_config(db, o);
  auto host = start_host(config);
  const auto id = db.enqueue("noop", R"({"sleep_ms": 5000})");
  REQUIRE(eventually([&] { return db.status(id) == "running"; }, 20s));
  host->signal(SIGTERM);
  REQUIRE(host->wait(15s) == 0);
  CHECK(db.status(id) == "retry_scheduled");
  CHECK_THAT(db.field(id, "last_error_message"),
             Catch::Contains("interrupted"));
}
