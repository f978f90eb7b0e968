// The metrics that answer "are we late?" and "is anything stuck?" (DESIGN §12),
// read from a real host's /metrics.
#include <catch2/catch.hpp>

#include "api_host.hpp"

using namespace jobhost::test;

namespace {

std::string scrape(ApiProcess& api) {
  auto r = api.client().Get("/metrics");
  REQUIRE(r);
  REQUIRE(r->status == 200);
  return r->body;
}

double series(const std::string& text, const std::string& name) {
  const auto v = metric_value(text, name);
  INFO(name << " in\n" << text);
  REQUIRE(v.has_value());
  return *v;
}

}  // namespace

TEST_CASE("metrics: queue lag and ready work count only jobs that are due", "[ops][metrics]") {
  TestDb db;
  HostOptions o;
  o.roles = "[api]";  // nothing runs the jobs: they stay as inserted
  ApiProcess api(db, o, "");
  db.scalar("SELECT jobhost.enqueue('noop', '{}', 100, now() - interval '120 seconds')");
  db.scalar("SELECT jobhost.enqueue('noop', '{}', 10, now() - interval '5 seconds')");
  db.scalar("SELECT jobhost.enqueue('noop', '{}', 100, now() + interval '1 hour')");
  const std::string backing_off = db.enqueue("noop");
  db.scalar("UPDATE jobhost.jobs SET status = 'retry_scheduled', attempt_count = 1, run_at = now() + interval '1 hour' "
            "WHERE id = '" + backing_off + "'");

  const std::string text = scrape(api);
  const double normal_lag = series(text, R"(queue_lag_seconds{queue="noop",priority="normal"})");
  CHECK(normal_lag >= 120);
  CHECK(normal_lag < 180);
  const double high_lag = series(text, R"(queue_lag_seconds{queue="noop",priority="high"})");
  CHECK(high_lag >= 5);
  CHECK(high_lag < 60);
  CHECK(series(text, R"(queue_lag_seconds{queue="noop",priority="low"})") == 0);
  // Two jobs are due; the future-dated and the backing-off one are not work yet...
  CHECK(series(text, R"(queue_ready{queue="noop",priority="normal"})") == 1);
  CHECK(series(text, R"(queue_ready{queue="noop",priority="high"})") == 1);
  CHECK(series(text, R"(queue_ready{queue="noop",priority="low"})") == 0);
  // ...though they wait, and the depth counts them.
  CHECK(series(text, R"(queue_depth{queue="noop",priority="normal"})") == 3);
  CHECK(series(text, R"(queue_jobs{queue="noop",state="queued"})") == 3);
  CHECK(series(text, R"(queue_jobs{queue="noop",state="retry_scheduled"})") == 1);
  CHECK(series(text, R"(queue_jobs{queue="noop",state="running"})") == 0);
  CHECK(series(text, R"(queue_served{queue="noop"})") == 0);
}

TEST_CASE("metrics: the reaper's dead-lettering is counted in jobs_failed_total, and start delay is observed",
          "[ops][metrics]") {
  TestDb db;
  HostOptions o;
  o.roles = "[migrator, worker]";
  o.lease_ms = 1500;
  o.heartbeat_ms = 300;
  auto a = start_host(write_config(db, o, "host-a"), "host-a");
  const std::string id = db.enqueue("noop", R"({"sleep_ms": 60000})", 100, 1);
  REQUIRE(eventually([&] { return db.status(id) == "running"; }, 20s));
  a->kill9();

  o.roles = "[migrator, worker, reaper, api]";
  ApiProcess b(db, o, "", "host-b");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  std::string text = scrape(b);
  CHECK(series(text, R"(jobs_failed_total{queue="noop"})") == 1);
  CHECK(series(text, R"(dlq_size{queue="noop"})") == 1);

  // Created and due 30 s ago: its start is 30 s late.
  const std::string late = db.scalar(
      "INSERT INTO jobhost.jobs (queue_name, run_at, created_at) "
      "VALUES ('noop', now() - interval '30 seconds', now() - interval '30 seconds') RETURNING id::text");
  REQUIRE(eventually([&] { return db.status(late) == "completed"; }, 20s));
  text = scrape(b);
  CHECK(series(text, R"(job_start_delay_seconds_count{queue="noop"})") == 1);
  CHECK(series(text, R"(job_start_delay_seconds_sum{queue="noop"})") >= 30);
  CHECK(series(text, R"(job_start_delay_seconds_bucket{queue="noop",le="10"})") == 0);
  CHECK(series(text, R"(job_start_delay_seconds_bucket{queue="noop",le="60"})") == 1);
  CHECK(series(text, R"(queue_served{queue="noop"})") == 1);
}
