// jobhost through a real PgBouncer in transaction pooling mode (DESIGN §12):
// postgres.url at PgBouncer, postgres.pooler: transaction, and LISTEN on a
// direct postgres.listen_url (or polling without one). PgBouncer gets fewer
// server connections than the host has clients, so transactions of different
// clients really share them.
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "pgbouncer.hpp"

using namespace jobhost::test;

namespace {

// write_config's file with postgres: pointing at PgBouncer.
std::string pooled_config(const TestDb& db, const PgBouncer& bouncer, const HostOptions& o, const std::string& tag,
                          bool listen_direct = true) {
  const std::string path = write_config(db, o, tag);
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  std::string yaml = text.str();
  const auto end = yaml.find('\n');
  yaml.replace(0, end, "postgres: { url: \"" + bouncer.url() + "\", pool_size: 4, pooler: transaction" +
                           (listen_direct ? ", listen_url: \"" + db.url() + "\"" : std::string()) + " }");
  std::ofstream(path) << yaml;
  return path;
}

long long completed(TestDb& db) { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'"); }

}  // namespace

TEST_CASE("pgbouncer: the pipeline runs through PgBouncer in transaction mode, woken by LISTEN on a direct connection",
          "[pgbouncer]") {
  TestDb db;
  PgBouncer bouncer(db);
  HostOptions o;
  o.roles = "[migrator, worker, reaper, scheduler]";
  o.concurrency = 8;
  o.poll_ms = 60000;  // only a NOTIFY wakes the migrator in time
  auto host = start_host(pooled_config(db, bouncer, o, "pooled"), "pooled");
  CHECK_THAT(host->log(), Catch::Contains("LISTEN on postgres.listen_url"));
  const long long xacts_before = bouncer.stat("total_xact_count");

  // Retries and dead-lettering go through the same statements as successes.
  db.enqueue_many("noop", "{}", 400);
  db.enqueue_many("noop", R"({"fail_attempts": 1})", 50);
  const std::string dead = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return completed(db) == 450; }, 60s));
  REQUIRE(eventually([&] { return db.status(dead) == "failed"; }, 10s));
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'retry_scheduled'") == 50);

  // A job enqueued while the migrator sleeps (poll: 60 s) starts at once.
  std::this_thread::sleep_for(1500ms);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string one = db.enqueue("noop");
  REQUIRE(eventually([&] { return db.status(one) == "completed"; }, 10s));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);

  // The work went through PgBouncer (batched: a statement moves many jobs),
  // and no loop of the host failed on its way.
  CHECK(bouncer.stat("total_xact_count") - xacts_before > 50);
  host->signal(SIGTERM);
  REQUIRE(host->wait(15s) == 0);
  const std::string log = host->log();
  CHECK(log.find(" warning ") == std::string::npos);
  CHECK(log.find(" error ") == std::string::npos);
  CHECK(log.find("ERROR:") == std::string::npos);  // PostgreSQL's, e.g. a prepared statement that does not exist
}

TEST_CASE("pgbouncer: without postgres.listen_url the host says it polls, and jobs still run", "[pgbouncer]") {
  TestDb db;
  PgBouncer bouncer(db);
  HostOptions o;
  auto host = start_host(pooled_config(db, bouncer, o, "polling", false), "polling");
  CHECK_THAT(host->log(), Catch::Contains("no postgres.listen_url is set: no LISTEN; the migrator polls every 200 ms"));
  db.enqueue_many("noop", "{}", 50);
  REQUIRE(eventually([&] { return completed(db) == 50; }, 30s));
  CHECK(host->log().find("ERROR:") == std::string::npos);
}

TEST_CASE("pgbouncer: a job whose host is killed with kill -9 is run again by another host, through PgBouncer",
          "[pgbouncer][recovery]") {
  TestDb db;
  PgBouncer bouncer(db);
  HostOptions o;
  o.lease_ms = 1500;
  o.concurrency = 8;
  auto a = start_host(pooled_config(db, bouncer, o, "host-a"), "host-a");
  auto b = start_host(pooled_config(db, bouncer, o, "host-b"), "host-b");
  db.enqueue_many("noop", R"({"sleep_ms": 40})", 400);
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'running' AND worker_id LIKE 'host-a/%'") > 0;
  }, 20s));
  a->kill9();
  REQUIRE(a->wait(5s) == 128 + SIGKILL);
  REQUIRE(eventually([&] { return completed(db) == 400; }, 90s));
  CHECK(db.count("SELECT count(*) FROM (SELECT job_id FROM jobhost.job_logs WHERE status = 'completed' "
                 "GROUP BY job_id HAVING count(*) > 1) d") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'stalled'") > 0);
  CHECK(a->log().find("ERROR:") == std::string::npos);
  CHECK(b->log().find("ERROR:") == std::string::npos);
}

TEST_CASE("pgbouncer: a plugin's own database work (maintenance_cleanup's batched deletes) runs through PgBouncer",
          "[pgbouncer][plugins]") {
  TestDb db;
  PgBouncer bouncer(db);
  HostOptions o;
  o.extra_yaml = "  - name: maintenance_cleanup\n"
                 "    library: " + plugin_dir() + "/libmaintenance_cleanup.so\n"
                 "    job_types: [maintenance.cleanup]\n"
                 "    settings: { database_url: \"" + bouncer.url() + "\", batch_size: 7 }\n";
  // 40 completed jobs ten days old, 5 recent ones: the old ones go, in batches of 7.
  db.scalar("INSERT INTO jobhost.jobs (queue_name, status, completed_at, max_attempts) "
            "SELECT 'noop', 'completed', now() - interval '10 days', 1 FROM generate_series(1, 40)");
  db.scalar("INSERT INTO jobhost.jobs (queue_name, status, completed_at, max_attempts) "
            "SELECT 'noop', 'completed', now(), 1 FROM generate_series(1, 5)");
  auto host = start_host(pooled_config(db, bouncer, o, "cleanup"), "cleanup");
  const std::string run = db.enqueue("maintenance.cleanup");
  REQUIRE(eventually([&] { return db.status(run) == "completed"; }, 30s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop'") == 5);
  CHECK(host->log().find("ERROR:") == std::string::npos);
}
