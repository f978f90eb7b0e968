// The normal flow of jobs through one host: completion, retries, the DLQ,
// payload validation, priorities, and jobs no plugin serves.
#include <algorithm>
#include <thread>

#include <catch2/catch.hpp>

#include "api_host.hpp"
#include "harness.hpp"
#include "redis.hpp"
#include "routing.hpp"

using namespace jobhost::test;

TEST_CASE("enqueued jobs run once each and leave one log row per attempt", "[pipeline]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  db.enqueue_many("noop", "{}", 300);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 300; }, 30s));
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == 300);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE attempt_number = 1 AND status = 'completed'") == 300);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1 OR completed_at IS NULL") == 0);
}

TEST_CASE("a failing job is retried with growing delays and logs its real attempt numbers", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.base_ms = 200;
  o.max_attempts = 5;
  auto host = start_host(write_config(db, o));
  const auto id = db.enqueue("noop", R"({"fail_attempts": 2})");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(db.scalar("SELECT string_agg(attempt_number || ':' || status, ',' ORDER BY attempt_number) "
                  "FROM jobhost.job_logs WHERE job_id = '" + id + "'") ==
        "1:retry_scheduled,2:retry_scheduled,3:completed");
  // Equal jitter: the second delay is at least base (200 ms), the first at least base/2.
  CHECK(db.retry_gap_ms(id, 1) >= 100);
  CHECK(db.retry_gap_ms(id, 2) >= 200);
  CHECK(db.field(id, "last_error_message") ==
        "noop: failing attempt 2 as asked");
}

TEST_CASE("a job that keeps failing is dead-lettered after max_attempts with its last error", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.max_attempts = 3;
  auto host = start_host(write_config(db, o));
  const auto thrower = db.enqueue("noop", R"({"throw": true})");
  REQUIRE(eventually([&] { return db.status(thrower) == "failed"; }, 20s));
  CHECK(db.field(thrower, "attempt_count") == "3");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + thrower + "'") == 3);
  CHECK_THAT(db.field(thrower, "last_error_message"),
             Catch::Contains("no attempts left") && Catch::Contains("noop: thrown as asked"));
  CHECK(db.field(thrower, "failed_at IS NOT NULL") == "t");
}

TEST_CASE("a permanent failure goes to the DLQ at once", "[pipeline]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  const auto id = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK(db.field(id, "last_error_message") ==
        "noop: permanent failure as asked");
}

TEST_CASE("a payload the plugin refuses is dead-lettered naming the field, without running", "[pipeline]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  const auto id = db.enqueue("noop", R"({"sleep_ms": "soon"})");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK(db.field(id, "last_error_message") ==
        "invalid payload: payload.sleep_ms: must be a non-negative integer");
}

TEST_CASE("a handler's requested retry delay is honoured instead of the backoff", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.base_ms = 10;
  o.max_ms = 20;
  auto host = start_host(write_config(db, o));
  const auto id = db.enqueue("noop", R"({"fail_attempts": 1, "retry_after_ms": 1500})");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(db.retry_gap_ms(id, 1) >= 1500);
}

TEST_CASE("high-priority jobs start before normal and low ones", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 1;
  auto host = start_host(write_config(db, o));
  // Occupy the only worker so the rest pile up in Redis before any is fetched.
  const auto blocker = db.enqueue("noop", R"({"sleep_ms": 1500})");
  REQUIRE(eventually([&] { return db.status(blocker) == "running"; }, 10s));
  {
    pqxx::work tx(db.conn());
    tx.exec("SELECT jobhost.enqueue('noop', jsonb_build_object('n', g), p) "
            "FROM generate_series(1, 5) g, unnest(ARRAY[200, 100, 10]) p");
    tx.commit();
  }
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 16; }, 20s));
  const auto order = db.scalar(
      "SELECT string_agg(j.priority::text, ',' ORDER BY l.started_at) FROM jobhost.job_logs l "
      "JOIN jobhost.jobs j ON j.id = l.job_id WHERE j.id <> '" + blocker + "'");
  CHECK(order == "10,10,10,10,10,100,100,100,100,100,200,200,200,200,200");
}

TEST_CASE("a backlog beyond max_in_redis waits in PostgreSQL, and a high-priority job overtakes it", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 2;
  o.batch_size = 20;
  o.max_in_redis = 50;
  auto host = start_host(write_config(db, o));
  db.enqueue_many("noop", R"({"sleep_ms": 5})", 1000);
  jobhost::Redis redis(db.redis_url());
  const jobhost::QueueKeys keys(db.prefix(), "noop");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") >= 50; }, 20s));
  // The window holds at most max_in_redis ids (one migrator: no batch of slack).
  long long most = 0;
  for (int i = 0; i < 20; ++i) {
    jobhost::Reply r = redis.command({"SCARD", keys.members()});
    most = std::max(most, r->integer);
    std::this_thread::sleep_for(20ms);
  }
  CHECK(most > 0);
  CHECK(most <= 50);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'queued'") > 500);
  // Claimed high band first, so it starts long before the backlog ahead of it.
  const auto urgent = db.enqueue("noop", "{}", 10);
  REQUIRE(eventually([&] { return db.status(urgent) == "completed"; }, 20s));
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 1001; }, 30s));
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs l, jobhost.job_logs u WHERE u.job_id = '" + urgent +
                 "' AND l.job_id <> u.job_id AND l.started_at > u.started_at") > 300);
}

TEST_CASE("the SQL priority bands match the host's Redis lists", "[pipeline][sql]") {
  TestDb db;
  for (int p : {-1000, 0, 49, 50, 51, 100, 149, 150, 151, 1000}) {
    INFO("priority " << p);
    CHECK(db.count("SELECT jobhost.priority_band(" + std::to_string(p) + ")") ==
          static_cast<int>(jobhost::band_for_priority(p)));
  }
}

TEST_CASE("jobs of a type no plugin serves stay queued while others run", "[pipeline]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  const auto orphan = db.enqueue("nobody.serves.this", "{}");
  const auto served = db.enqueue("noop", "{}");
  REQUIRE(eventually([&] { return db.status(served) == "completed"; }, 10s));
  std::this_thread::sleep_for(1500ms);
  CHECK(db.status(orphan) == "queued");
  CHECK(db.field(orphan, "attempt_count") == "0");
}

TEST_CASE("jobhost.enqueue applies queue defaults, deduplicates and refuses bad input", "[pipeline][sql]") {
  TestDb db;
  // No host has registered the queue yet: the default is 3.
  const auto a = db.enqueue("mail", "{}");
  CHECK(db.field(a, "max_attempts") == "3");
  db.scalar("UPDATE jobhost.job_queues SET default_max_attempts = 7 WHERE name = 'mail' RETURNING 1");
  const auto b = db.enqueue("mail", "{}");
  CHECK(db.field(b, "max_attempts") == "7");
  const auto c = db.enqueue("mail", "{}", 100, 2);
  CHECK(db.field(c, "max_attempts") == "2");

  const auto k1 = db.scalar("SELECT jobhost.enqueue('mail', '{}', 100, now(), NULL, 'once')");
  const auto k2 = db.scalar("SELECT jobhost.enqueue('mail', '{}', 100, now(), NULL, 'once')");
  CHECK(k1 == k2);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE unique_key = 'once'") == 1);

  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue('mail', '[1]')"),
                    Catch::Contains("payload must be a JSON object"));
  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue('', '{}')"),
                    Catch::Contains("job_type must be a non-empty text"));
  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue('mail', jsonb_build_object('x', repeat('y', 2000000)))"),
                    Catch::Contains("jobs_payload_too_large"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 4);
}

TEST_CASE("jobhost.enqueue_many inserts a batch in order and refuses a bad payload by position", "[pipeline][sql]") {
  TestDb db;
  // The ids come back in the order of the payloads; the options apply to all.
  db.scalar("CREATE TABLE ids AS SELECT id, row_number() OVER () AS n FROM jobhost.enqueue_many('noop', "
            "ARRAY['{\"n\": 10}', '{\"n\": 20}', '{\"n\": 30}']::jsonb[], 20) AS id");
  CHECK(db.scalar("SELECT string_agg(j.payload->>'n', ',' ORDER BY i.n) FROM ids i JOIN jobhost.jobs j USING (id)") ==
        "10,20,30");
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE priority = 20 AND max_attempts = 3 "
                 "AND status = 'queued'") == 3);

  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue_many('noop', ARRAY['{}', '[1]']::jsonb[])"),
                    Catch::Contains("payloads[2] must be a JSON object, got array"));
  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue_many('noop', ARRAY['{}', NULL]::jsonb[])"),
                    Catch::Contains("payloads[2] must be a JSON object, got NULL"));
  CHECK_THROWS_WITH(db.scalar("SELECT jobhost.enqueue_many('noop', ARRAY['{}']::jsonb[], 100, now(), 0)"),
                    Catch::Contains("max_attempts must be at least 1"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 3);  // the refused calls wrote nothing

  // A host runs them like any other job.
  auto host = start_host(write_config(db, {}, "many"));
  CHECK(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 3; }, 10s));
}

// jobhost.enqueue and enqueue_many do the insert triggers' work themselves and
// tell the AFTER INSERT trigger to skip it (018_enqueue_fast_path.sql); a
// plain INSERT after them in the same transaction, or after one that failed
// in a savepoint, still gets its key from the payload and its queue
// registered.
TEST_CASE("plain INSERTs next to enqueue calls in one transaction still get keys, defaults and registration",
          "[pipeline][sql]") {
  TestDb db;
  db.scalar("INSERT INTO jobhost.job_queues (name, default_max_attempts, flow_keyed, flow_key_path) "
            "VALUES ('keyed', 5, true, '{tenant}') RETURNING 1");
  db.scalar(R"sql(DO $$
BEGIN
  PERFORM jobhost.enqueue('keyed', '{"tenant": "a"}');
  INSERT INTO jobhost.jobs (queue_name, payload) VALUES ('keyed', '{"tenant": "b"}');
  PERFORM jobhost.enqueue_many('keyed', ARRAY['{"tenant": "c"}']::jsonb[]);
  BEGIN
    PERFORM jobhost.enqueue('keyed', jsonb_build_object('tenant', 'x', 'pad', repeat('y', 2000000)));
  EXCEPTION WHEN check_violation THEN NULL;
  END;
  INSERT INTO jobhost.jobs (queue_name, payload) VALUES ('keyed', '{"tenant": "d"}');
  PERFORM jobhost.enqueue('keyed', '{"tenant": "e"}');
  INSERT INTO jobhost.jobs (queue_name, payload, max_attempts) VALUES ('fresh', '{}', 2);
END $$; SELECT 1)sql");
  CHECK(db.scalar("SELECT string_agg(flow_key || ':' || max_attempts, ',' ORDER BY payload->>'tenant') "
                  "FROM jobhost.jobs WHERE queue_name = 'keyed'") == "a:5,b:5,c:5,d:5,e:5");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_queues WHERE name = 'fresh'") == 1);
  // Outside a transaction too: a plain INSERT after an enqueue.
  db.enqueue("keyed", R"({"tenant": "f"})");
  db.scalar(R"sql(INSERT INTO jobhost.jobs (queue_name, payload) VALUES ('keyed', '{"tenant": "g"}') RETURNING 1)sql");
  CHECK(db.scalar("SELECT string_agg(flow_key, ',' ORDER BY flow_key) FROM jobhost.jobs "
                  "WHERE payload->>'tenant' IN ('f', 'g')") == "f,g");
}

// The migrator's claims start each band at the oldest run_at its last claim
// took (migrator.hpp, ClaimFloors). A job that becomes ready below that, here
// one enqueued with a run_at an hour ago after newer jobs were claimed, is
// found by the migrator's FloorProbe (every ClaimFloors::kRescan), which
// lowers the floor so that the next claim takes it.
TEST_CASE("a job enqueued with a run_at older than the jobs claimed before it still runs", "[pipeline]") {
  TestDb db;
  HostOptions o;
  auto host = start_host(write_config(db, o));
  db.enqueue_many("noop", "{}", 50);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 50; }, 20s));
  // Keep the claims' floor moving with fresh jobs while the old one waits.
  const std::string old_id = db.scalar(
      "SELECT jobhost.enqueue('noop', '{\"old\": true}', run_at => now() - interval '1 hour')");
  for (int i = 0; i < 5; ++i) {
    db.enqueue_many("noop", "{}", 10);
    std::this_thread::sleep_for(200ms);
  }
  REQUIRE(eventually([&] { return db.status(old_id) == "completed"; }, 15s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE status <> 'completed'") == 0);
}

// Workers are woken one after another (worker_pool.hpp): each that takes a
// job wakes the next while jobs wait. Slow jobs must still start side by side
// on every worker, not one per finished job.
TEST_CASE("a burst of slow jobs starts on every worker at once", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 16;
  auto host = start_host(write_config(db, o));
  // Every worker is up and idle before the burst.
  db.enqueue("noop", "{}");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 1; }, 20s));
  db.enqueue_many("noop", R"({"sleep_ms": 1000})", 16);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 17; }, 30s));
  CHECK(peak_running(db) == 16);
  // All started within a fraction of one job's length.
  CHECK(db.count("SELECT (extract(epoch FROM max(started_at) - min(started_at)) * 1000)::bigint "
                 "FROM jobhost.job_logs WHERE job_id IN (SELECT id FROM jobhost.jobs WHERE payload ? 'sleep_ms')") < 300);
}

// The direct lease (migrator.hpp): a job enqueued while this host's workers
// wait is leased by the migrator's claim and handed to the pool, without
// Redis. It must still run once, with one attempt, and never while its queue
// is paused (the claim checks PostgreSQL's pause itself).
TEST_CASE("jobs for waiting workers are leased by the claim itself, never while the queue is paused", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  ApiProcess api(db, o, "");
  auto client = api.client();
  const auto direct = [&] {
    const auto r = client.Get("/metrics");
    REQUIRE(r);
    return metric_value(r->body, "jobs_direct_leased_total{queue=\"noop\"}").value_or(0);
  };
  const auto completed = [&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'"); };
  for (int i = 1; i <= 20; ++i) {
    db.enqueue("noop", "{}");
    REQUIRE(eventually([&] { return completed() == i; }, 10s));
  }
  // The first may come before the fetcher first waits on Redis.
  CHECK(direct() >= 19);

  const std::vector<std::string> env = {"DATABASE_URL=" + db.url(), "REDIS_URL=" + db.redis_url(),
                                        "JOBHOST_REDIS_PREFIX=" + db.prefix()};
  REQUIRE(run({bin_dir() + "/jobctl", "queue", "pause", "noop"}, env).first == 0);
  const double before = direct();
  db.enqueue_many("noop", "{}", 5);
  std::this_thread::sleep_for(1500ms);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE status IN ('running', 'completed')") == 20);
  CHECK(direct() == before);
  REQUIRE(run({bin_dir() + "/jobctl", "queue", "resume", "noop"}, env).first == 0);
  REQUIRE(eventually([&] { return completed() == 25; }, 10s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == 25);
}

TEST_CASE("with host.migrator.direct_lease false every job goes through Redis", "[pipeline]") {
  TestDb db;
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  o.direct_lease = false;
  ApiProcess api(db, o, "");
  for (int i = 1; i <= 5; ++i) {
    db.enqueue("noop", "{}");
    REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == i; },
                       10s));
  }
  const auto r = api.client().Get("/metrics");
  REQUIRE(r);
  CHECK(metric_value(r->body, "jobs_direct_leased_total{queue=\"noop\"}").value_or(0) == 0);
}

TEST_CASE("a host started on a nearly empty jobs table keeps its hot statements on indexes as the table grows",
          "[pipeline]") {
  TestDb db;
  // No ANALYZE may replace the plans the host makes while the table is small.
  pqxx::nontransaction(db.conn()).exec0("ALTER TABLE jobhost.jobs SET (autovacuum_enabled = false)");
  const auto seq_scans = [&] {
    return db.count("SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'jobhost.jobs'::regclass");
  };
  // Progress is read from job_logs: a count over jobs would scan jobs itself.
  const auto logged = [&] { return db.count("SELECT count(*) FROM jobhost.job_logs"); };
  HostOptions o;
  o.concurrency = 2;
  auto host = start_host(write_config(db, o));
  // More than five runs of each hot statement while jobs holds a few rows:
  // the host's prepared statements move to their generic plans.
  for (int round = 1; round <= 10; ++round) {
    db.enqueue_many("noop", "{}", 3);
    REQUIRE(eventually([&] { return logged() == round * 3; }, 20s));
  }
  // Then the table grows to 200,000 rows (finished jobs, as a history), with
  // no ANALYZE after it.
  pqxx::nontransaction(db.conn())
      .exec0("INSERT INTO jobhost.jobs (queue_name, payload, status, attempt_count, completed_at, max_attempts) "
             "SELECT 'noop', '{}', 'completed', 1, now(), 3 FROM generate_series(1, 200000)");
  // Idle backends report their counts within 10 s.
  std::this_thread::sleep_for(11s);
  const long long before = seq_scans();
  for (int round = 1; round <= 20; ++round) {
    db.enqueue_many("noop", "{}", 5);
    REQUIRE(eventually([&] { return logged() == 30 + round * 5; }, 20s));
  }
  // The host's backends report the rest as they exit.
  host.reset();
  std::this_thread::sleep_for(1500ms);
  const long long scans = seq_scans() - before;
  INFO("sequential scans of jobhost.jobs while 100 jobs ran: " << scans);
  // A generic plan kept from the small table reads the whole table in every
  // lease and completion: at least 40 here.
  CHECK(scans < 10);
}
