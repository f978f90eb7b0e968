// jobctl against a real database: migrate, enqueue, status, queues and the DLQ.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

namespace {

std::pair<int, std::string> jobctl(const TestDb& db, std::vector<std::string> args) {
  args.insert(args.begin(), bin_dir() + "/jobctl");
  return run(args, {"DATABASE_URL=" + db.url(), "REDIS_URL=" + db.redis_url()});
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

TEST_CASE("jobctl db migrate is idempotent", "[jobctl]") {
  TestDb db;  // already migrated
  const auto before = db.count("SELECT count(*) FROM jobhost.schema_migrations");
  CHECK(before >= 2);
  const auto [code, out] = jobctl(db, {"db", "migrate"});
  CHECK(code == 0);
  CHECK_THAT(out, Catch::Contains("already up to date"));
  CHECK(db.count("SELECT count(*) FROM jobhost.schema_migrations") == before);
}

TEST_CASE("jobctl enqueue stores the options given and refuses bad payloads", "[jobctl]") {
  TestDb db;
  const auto [code, out] = jobctl(db, {"enqueue", "noop", R"({"a": 1})", "--priority", "7", "--max-attempts",
                                       "9", "--run-at", "2030-01-01 00:00:00+00"});
  REQUIRE(code == 0);
  const std::string id = trim(out);
  CHECK(db.scalar("SELECT priority || '/' || max_attempts || '/' || (run_at = '2030-01-01 00:00:00+00') "
                  "|| '/' || payload::text FROM jobhost.jobs WHERE id = '" + id + "'") == "7/9/true/{\"a\": 1}");

  const auto [bad, bout] = jobctl(db, {"enqueue", "noop", "{not json"});
  CHECK(bad == 1);
  CHECK_THAT(bout, Catch::Contains("payload is not valid JSON"));
  const auto [arr, aout] = jobctl(db, {"enqueue", "noop", "[1,2]"});
  CHECK(arr == 1);
  CHECK_THAT(aout, Catch::Contains("payload must be a JSON object"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 1);
}

TEST_CASE("jobctl status shows a job's attempts and jobctl queues its queue", "[jobctl]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  const auto id = db.enqueue("noop", R"({"fail_attempts": 1})");
  const auto waiting = db.enqueue("unserved.type", "{}");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  const auto [code, out] = jobctl(db, {"status", id});
  CHECK(code == 0);
  CHECK_THAT(out, Catch::Contains("status            completed") && Catch::Contains("#1 retry_scheduled") &&
                      Catch::Contains("#2 completed") && Catch::Contains("noop: failing attempt 1 as asked"));
  const auto [qcode, qout] = jobctl(db, {"queues"});
  CHECK(qcode == 0);
  CHECK_THAT(qout, Catch::Contains("unserved.type") && Catch::Contains("NO PLUGIN"));
  const auto [missing, mout] = jobctl(db, {"status", "00000000-0000-0000-0000-000000000000"});
  CHECK(missing == 1);
  CHECK_THAT(mout, Catch::Contains("no job with id"));
  (void)waiting;
}

TEST_CASE("jobctl dlq replays exactly the job asked for, or a whole queue, and purges", "[jobctl]") {
  TestDb db;
  auto host = start_host(write_config(db, {}));
  const auto a = db.enqueue("noop", R"({"permanent": true})");
  const auto b = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return db.status(a) == "failed" && db.status(b) == "failed"; }, 20s));

  const auto [lcode, lout] = jobctl(db, {"dlq", "list", "--queue", "noop"});
  CHECK(lcode == 0);
  CHECK_THAT(lout, Catch::Contains(a) && Catch::Contains(b) && Catch::Contains("2 dead-lettered jobs shown"));

  // Replaying b must touch b only (the seeds' replay reset another job).
  const auto [rcode, rout] = jobctl(db, {"dlq", "replay", b});
  CHECK(rcode == 0);
  CHECK_THAT(rout, Catch::Contains("replayed 1 jobs"));
  CHECK(db.status(a) == "failed");
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + b + "'") == 2;
  }, 20s));
  CHECK(db.status(b) == "failed");  // still permanent: it ran again and failed again

  const auto [ncode, nout] = jobctl(db, {"dlq", "replay", "00000000-0000-0000-0000-000000000000"});
  CHECK(ncode == 1);
  CHECK_THAT(nout, Catch::Contains("is not in the DLQ"));

  const auto [qcode, qout] = jobctl(db, {"dlq", "replay", "--queue", "noop"});
  CHECK(qcode == 0);
  CHECK_THAT(qout, Catch::Contains("replayed 2 jobs"));
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'failed'") == 2 &&
           db.count("SELECT count(*) FROM jobhost.job_logs") == 5;
  }, 20s));

  const auto [pcode, pout] = jobctl(db, {"dlq", "purge", "--queue", "noop"});
  CHECK(pcode == 0);
  CHECK_THAT(pout, Catch::Contains("purged 2"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 0);
}
