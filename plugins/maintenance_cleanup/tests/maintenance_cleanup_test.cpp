// maintenance.cleanup end to end: retention in PostgreSQL and expired export
// files, through a real host; and its settings, through --check-config.
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "settings_check.hpp"

using namespace jobhost::test;
namespace fs = std::filesystem;

namespace {

// extra_settings: YAML lines appended inside settings: (indent by 6).
std::string config(TestDb& db, const fs::path& exports, int batch = 10, const std::string& database_url = "",
                   const std::string& extra_settings = "") {
  HostOptions o;
  o.extra_yaml = "  - name: maintenance_cleanup\n"
                 "    library: " + plugin_dir() + "/libmaintenance_cleanup.so\n"
                 "    job_types: [maintenance.cleanup]\n"
                 "    concurrency: { min: 1, max: 1 }\n"
                 "    retry: { max_attempts: 2, base_ms: 50, max_ms: 100 }\n"
                 "    settings:\n"
                 "      database_url: \"" + (database_url.empty() ? db.url() : database_url) + "\"\n"
                 "      batch_size: " + std::to_string(batch) + "\n"
                 "      export_root: \"" + exports.string() + "\"\n"
                 "      retention: { completed_jobs_days: 7, failed_jobs_days: 30, job_logs_days: 30 }\n" +
                 extra_settings;
  return write_config(db, o, "cleanup");
}

// Inserts n jobs in `status` whose relevant timestamps are `days` old.
void old_jobs(TestDb& db, const std::string& status, int n, int days, const std::string& queue = "old.work") {
  db.scalar("WITH j AS (INSERT INTO jobhost.jobs (queue_name, status, max_attempts, completed_at, failed_at, updated_at, "
            "created_at) SELECT '" + queue + "', '" + status + "', 3, "
            "CASE WHEN '" + status + "' = 'completed' THEN now() - interval '" + std::to_string(days) + " days' END, "
            "CASE WHEN '" + status + "' = 'failed' THEN now() - interval '" + std::to_string(days) + " days' END, "
            "now() - interval '" + std::to_string(days) + " days', now() - interval '" + std::to_string(days) + " days' "
            "FROM generate_series(1, " + std::to_string(n) + ") RETURNING id) "
            "INSERT INTO jobhost.job_logs (job_id, status, attempt_number, created_at) "
            "SELECT id, 'completed', 1, now() - interval '" + std::to_string(days) + " days' FROM j RETURNING 1");
}

long long count_where(TestDb& db, const std::string& where) {
  return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'old.work' AND " + where);
}

}  // namespace

TEST_CASE("cleanup deletes finished jobs past retention in bounded batches, and never a live job", "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports);
  old_jobs(db, "completed", 35, 10);   // past 7 days: deleted
  old_jobs(db, "completed", 4, 2);     // recent: kept
  old_jobs(db, "cancelled", 3, 10);    // past 7 days: deleted
  old_jobs(db, "failed", 5, 40);       // past 30 days: deleted
  old_jobs(db, "failed", 6, 10);       // DLQ within 30 days: kept
  for (const char* live : {"queued", "retry_scheduled", "migrated_to_redis", "running"}) old_jobs(db, live, 3, 400);
  auto host = start_host(config(db, exports), "cleanup");
  const std::string id = db.enqueue("maintenance.cleanup");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  INFO(host->log());
  CHECK(count_where(db, "status = 'completed'") == 4);
  CHECK(count_where(db, "status = 'cancelled'") == 0);
  CHECK(count_where(db, "status = 'failed'") == 6);
  CHECK(count_where(db, "status IN ('queued', 'retry_scheduled', 'migrated_to_redis', 'running')") == 12);
  // The deleted jobs' logs went with them; the kept DLQ jobs' 10-day-old logs stay (retention 30).
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id "
                 "WHERE j.queue_name = 'old.work'") == 4 + 6 + 12);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs l WHERE NOT EXISTS "
                 "(SELECT 1 FROM jobhost.jobs j WHERE j.id = l.job_id)") == 0);
  // 35 completed rows at batch_size 10 took four batches, not one statement.
  CHECK_THAT(host->log(), Catch::Contains("cleanup: deleted 43 finished jobs"));
  // completed: 10+10+10+5 (4 statements), cancelled 1, failed 1, job_logs 1,
  // attempt counts 1, webhook deliveries 1, exports 1.
  CHECK_THAT(host->log(), Catch::Contains("(10 batches)"));
  fs::remove_all(exports);
}

TEST_CASE("cleanup trims old job_logs of kept jobs and removes expired export files", "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports / "t1");
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One') RETURNING 1");
  std::ofstream(exports / "t1" / "old.csv") << "a,b\n";
  std::ofstream(exports / "t1" / "new.csv") << "a,b\n";
  // Beside the export root, not in it: an expired row pointing there must not remove it.
  const fs::path outside = exports.string() + "-outside.csv";
  std::ofstream(outside) << "keep me\n";
  db.scalar("INSERT INTO app.exports (job_id, tenant_id, kind, status, path, expires_at) VALUES "
            "(gen_random_uuid(), 't1', 'contacts', 'completed', 't1/old.csv', now() - interval '1 hour'), "
            "(gen_random_uuid(), 't1', 'contacts', 'completed', 't1/new.csv', now() + interval '1 day'), "
            "(gen_random_uuid(), 't1', 'contacts', 'completed', '../" + outside.filename().string() + "', "
            " now() - interval '1 hour') RETURNING 1");
  // Webhook deliveries: 3 past the 30 days, 2 recent.
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('e1', 't1', 'https://example.com/hook', '0123456789abcdef') RETURNING 1");
  db.scalar("INSERT INTO app.webhook_deliveries (tenant_id, endpoint_id, job_id, event, event_id, attempt, "
            "status_code, duration_ms, created_at) SELECT 't1', 'e1', gen_random_uuid(), 'x', 'ev' || g, 1, 200, 5, "
            "now() - CASE WHEN g <= 3 THEN interval '31 days' ELSE interval '1 day' END "
            "FROM generate_series(1, 5) g RETURNING 1");
  // A DLQ job kept (10 days), with one 40-day-old log row and one recent one.
  old_jobs(db, "failed", 1, 10);
  db.scalar("INSERT INTO jobhost.job_logs (job_id, status, attempt_number, created_at) "
            "SELECT id, 'retry_scheduled', 0, now() - interval '40 days' FROM jobhost.jobs WHERE queue_name = 'old.work' RETURNING 1");
  auto host = start_host(config(db, exports), "cleanup");
  const std::string id = db.enqueue("maintenance.cleanup");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  INFO(host->log());
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id "
                 "WHERE j.queue_name = 'old.work'") == 1);
  CHECK_FALSE(fs::exists(exports / "t1" / "old.csv"));
  CHECK(fs::exists(exports / "t1" / "new.csv"));
  CHECK(fs::exists(outside));
  CHECK(db.scalar("SELECT string_agg(status, ',' ORDER BY path COLLATE \"C\") FROM app.exports") == "expired,completed,expired");
  CHECK_THAT(host->log(), Catch::Contains("is not inside the export root; file not removed"));
  CHECK(db.count("SELECT count(*) FROM app.webhook_deliveries") == 2);
  CHECK(db.count("SELECT count(*) FROM app.webhook_deliveries WHERE created_at < now() - interval '2 days'") == 0);
  // The attempts counted per minute: the 40-day-old one is gone, the 10-day-old one stays.
  CHECK(db.scalar("SELECT string_agg(status || ' ' || (now() - minute > interval '30 days'), ',') "
                  "FROM jobhost.attempt_counts WHERE queue_name = 'old.work'") == "completed false");
  CHECK_THAT(host->log(), Catch::Contains("deleted 0 finished jobs, 1 old job_logs rows, 1 old attempt counts and "
                                          "3 webhook deliveries, expired 2 exports, in "));
  fs::remove_all(exports);
  fs::remove(outside);
}

TEST_CASE("cleanup with PostgreSQL unreachable is retried with the cause, and bad payloads are refused",
          "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports);
  // The plugin's own database URL points at a closed port; the host's is fine.
  auto host = start_host(config(db, exports, 10, "postgresql://postgres@127.0.0.1:1/none"), "cleanup");
  const std::string id = db.enqueue("maintenance.cleanup");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 30s));
  CHECK(db.field(id, "attempt_count") == "2");
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("cleanup: PostgreSQL at 127.0.0.1:1 unreachable"));
  CHECK_THAT(db.field(id, "last_error_message"), !Catch::Contains("postgres@"));
  const std::string bad = db.enqueue("maintenance.cleanup", R"({"days": 3})");
  REQUIRE(eventually([&] { return db.status(bad) == "failed"; }, 30s));
  CHECK_THAT(db.field(bad, "last_error_message"), Catch::Contains("payload.days: unknown"));
  fs::remove_all(exports);
}

TEST_CASE("a config still giving redis_url and redis_key_prefix loads, each reported once as ignored, "
          "and Redis is never contacted", "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports);
  // Nothing listens on port 1: a run that still swept Redis would fail.
  const std::string path = config(db, exports, 10, "",
                                  "      redis_url: \"redis://127.0.0.1:1\"\n"
                                  "      redis_key_prefix: \"" + db.prefix() + "\"\n");
  const auto [code, out] = run({bin_dir() + "/jobhost", "--check-config", path});
  INFO(out);
  CHECK(code == 0);
  auto host = start_host(path, "cleanup");
  const std::string warning = "settings.redis_url is ignored since maintenance_cleanup 1.2.0: "
                              "the host's reconciler removes orphaned Redis ids";
  CHECK_THAT(host->log(), Catch::Contains(warning));
  CHECK_THAT(host->log(), Catch::Contains("settings.redis_key_prefix is ignored since maintenance_cleanup 1.2.0"));
  for (int i = 0; i < 2; ++i) {
    const std::string id = db.enqueue("maintenance.cleanup");
    REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  }
  const std::string log = host->log();
  INFO(log);
  size_t seen = 0;
  for (size_t at = log.find(warning); at != std::string::npos; at = log.find(warning, at + 1)) ++seen;
  CHECK(seen == 1);
  CHECK_THAT(log, !Catch::Contains("Redis ids,"));
  fs::remove_all(exports);
}

TEST_CASE("a misspelt maintenance_cleanup setting is refused by --check-config, naming it", "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports);
  check_settings_refused(config(db, exports, 10, "", "      batch_sise: 5\n"),
                         "settings.batch_sise: unknown key (did you mean batch_size?)");
  check_settings_refused(edited(config(db, exports), "completed_jobs_days", "completed_job_days"),
                         "settings.retention.completed_job_days: unknown key (did you mean completed_jobs_days?)");
  check_settings_refused(config(db, exports, 10, "", "      keep_days: 5\n"),
                         "settings.keep_days: unknown key (known: database_url, db_pool_size, batch_size");
  fs::remove_all(exports);
}

TEST_CASE("a cleanup run stops between batches when its job is cancelled", "[cleanup]") {
  TestDb db;
  const fs::path exports = fs::temp_directory_path() / (db.prefix() + "-exports");
  fs::create_directories(exports);
  old_jobs(db, "completed", 20000, 10);
  // batch_size 1: one statement per job, far longer than the heartbeat that
  // brings the cancellation.
  auto host = start_host(config(db, exports, 1), "cleanup");
  const std::string id = db.enqueue("maintenance.cleanup");
  REQUIRE(eventually([&] { return db.status(id) == "running"; }, 20s));
  db.scalar("UPDATE jobhost.jobs SET cancel_requested_at = now() WHERE id = '" + id + "' RETURNING 1");
  REQUIRE(eventually([&] { return db.status(id) == "cancelled"; }, 20s));
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("cleanup: stopped as asked after deleted"));
  const long long left = count_where(db, "status = 'completed'");
  CHECK(left > 0);
  CHECK(left < 20000);
  fs::remove_all(exports);
}
