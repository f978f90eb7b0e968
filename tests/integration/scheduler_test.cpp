// The scheduler role: cron ticks become jobs, exactly once per tick however
// many hosts run the scheduler (DESIGN §5, `schedules:`).
#include <signal.h>

#include <chrono>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

TEST_CASE("two hosts running the scheduler enqueue each cron tick exactly once", "[scheduler]") {
  TestDb db;
  HostOptions o;
  o.roles = "[scheduler]";
  // Every second (the optional seconds field), so the test sees several ticks.
  o.extra_yaml = "schedules:\n  - { job_type: tick.test, cron: \"* * * * * *\", payload: { from: cron } }\n";
  auto a = start_host(write_config(db, o, "sched-a"), "sched-a");
  auto b = start_host(write_config(db, o, "sched-b"), "sched-b");
  std::this_thread::sleep_for(4500ms);
  a->signal(SIGTERM);
  b->signal(SIGTERM);
  REQUIRE(a->wait(15s) == 0);
  REQUIRE(b->wait(15s) == 0);

  const long long jobs = db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'tick.test'");
  INFO("host a:\n" << a->log() << "\nhost b:\n" << b->log());
  CHECK(jobs >= 3);
  CHECK(jobs <= 8);
  // One job per tick: distinct whole-second run_at values and unique keys.
  CHECK(db.count("SELECT count(DISTINCT run_at) FROM jobhost.jobs WHERE queue_name = 'tick.test'") == jobs);
  CHECK(db.count("SELECT count(DISTINCT unique_key) FROM jobhost.jobs WHERE queue_name = 'tick.test'") == jobs);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'tick.test' "
                 "AND (date_trunc('second', run_at) <> run_at OR payload <> '{\"from\": \"cron\"}')") == 0);
  // Consecutive ticks, none missing between the first and the last.
  CHECK(db.count("SELECT extract(epoch FROM max(run_at) - min(run_at))::bigint + 1 FROM jobhost.jobs "
                 "WHERE queue_name = 'tick.test'") == jobs);
  // Both schedulers were live and saw the same ticks.
  CHECK_THAT(a->log(), Catch::Contains("scheduler: tick.test \"* * * * * *\" UTC, next tick"));
  CHECK_THAT(b->log(), Catch::Contains("scheduler: tick.test \"* * * * * *\" UTC, next tick"));
}

TEST_CASE("a scheduler that starts just after a tick fires it within catch_up_ms", "[scheduler]") {
  TestDb db;
  HostOptions o;
  o.roles = "[scheduler]";
  // Every minute; the current minute's tick is at most 60 s old, inside the 120 s window.
  o.extra_yaml = "schedules:\n  - { job_type: minute.test, cron: \"* * * * *\" }\n";
  o.host_yaml = "  scheduler: { catch_up_ms: 120000 }\n";
  const auto path = write_config(db, o, "sched");
  const std::string started = db.scalar("SELECT date_trunc('minute', now())::text");
  auto host = start_host(path, "sched");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'minute.test'") >= 1; }, 5s));
  INFO(host->log());
  CHECK(db.scalar("SELECT min(run_at)::text FROM jobhost.jobs WHERE queue_name = 'minute.test'") == started);
  CHECK_THAT(host->log(), Catch::Contains("enqueued job"));
}
