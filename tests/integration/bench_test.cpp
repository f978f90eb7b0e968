// `jobctl bench` end to end: it runs real hosts on a scratch database, checks
// that every job ran exactly once, and leaves nothing behind. Its figures are
// printed, never asserted (DESIGN §7: speed is for benchmarks, not tests).
#include <cstdlib>
#include <regex>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "redis.hpp"

using namespace jobhost::test;

namespace {

std::pair<int, std::string> bench(std::vector<std::string> args) {
  args.insert(args.begin(), {bin_dir() + "/jobctl", "bench"});
  return run(args, {}, 120s);
}

long long leftovers(TestDb& db) {
  jobhost::Redis redis(db.redis_url());
  const auto keys = redis.command({"KEYS", "jobhost_bench_*"});
  return db.count("SELECT count(*) FROM pg_database WHERE datname LIKE 'jobhost_bench_%'") +
         static_cast<long long>(jobhost::reply_size(keys));
}

}  // namespace

TEST_CASE("jobctl bench drains every job once, reports its figures and cleans up", "[bench]") {
  TestDb db;  // only for looking at the servers afterwards
  // Enough instant jobs at high concurrency that a worker-pool race shows up
  // as a job run twice (the bench exits non-zero when one is).
  const auto [code, out] = bench({"--jobs", "20000", "--rate", "200", "--latency-seconds", "1"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("synchronous_commit="));
  CHECK_THAT(out, Catch::Contains("enqueue     20000 jobs in"));
  CHECK_THAT(out, Catch::Contains("20000 completed, 0 failed, 20000 handler runs, each job ran once"));
  CHECK_THAT(out, Catch::Matches("(.|\\n)*latency     200 jobs at 200/s for 1 s, .*p50 [0-9.]+ ms .*p99 [0-9.]+ ms(.|\\n)*"));
  CHECK(leftovers(db) == 0);
}

TEST_CASE("jobctl bench --batch-jobs drains one batch of every job and reports when it finished", "[bench][batch]") {
  TestDb db;
  const auto [code, out] = bench({"--jobs", "5000", "--batch-jobs", "--latency-seconds", "0"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("5000 completed, 0 failed, 5000 handler runs, each job ran once"));
  CHECK_THAT(out, Catch::Matches("(.|\\n)*batch       one batch of 5000 jobs, 5000 completed; finished [0-9.]+ s after the commit(.|\\n)*"));
  CHECK(leftovers(db) == 0);
}

// A window far below the backlog: the migrator waits for room again and again.
TEST_CASE("jobctl bench --max-in-redis gives the host a small Redis window and still drains every job once",
          "[bench][flow]") {
  TestDb db;
  const auto [code, out] = bench({"--jobs", "4000", "--max-in-redis", "300", "--flow-keys", "3", "--latency-seconds", "0"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("window      migrator.max_in_redis 300"));
  CHECK_THAT(out, Catch::Contains("4000 completed, 0 failed, 4000 handler runs, each job ran once"));
  CHECK(leftovers(db) == 0);
}

TEST_CASE("jobctl bench --history fills the table with finished jobs first and drains only its own", "[bench]") {
  TestDb db;
  const auto [code, out] = bench({"--jobs", "1000", "--history", "3000", "--latency-seconds", "0"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Matches("(.|\\n)*history     3000 finished jobs and 3000 job_logs rows, inserted in [0-9]+ s "
                                 "and vacuumed in [0-9]+ s; jobs .+ \\+ indexes .+, job_logs .+(.|\\n)*"));
  CHECK_THAT(out, Catch::Contains("1000 completed, 0 failed, 1000 handler runs, each job ran once"));
  CHECK(leftovers(db) == 0);
}

TEST_CASE("jobctl bench --floor runs the host's statements back to back on as many jobs and compares", "[bench]") {
  TestDb db;
  const auto [code, out] = bench({"--jobs", "3000", "--floor", "--latency-seconds", "0"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("3000 completed, 0 failed, 3000 handler runs, each job ran once"));
  CHECK_THAT(out, Catch::Matches("(.|\\n)*floor       3000 jobs at [0-9]+ jobs/s: the host's claim, lease and completion "
                                 "statements back to back \\(batches of 1000, no Redis, no handler\\); the drain above "
                                 "is [0-9.]+ of it(.|\\n)*"));
  CHECK(leftovers(db) == 0);
}

TEST_CASE("jobctl bench --soak holds a transaction open while a steady rate runs and reports each minute", "[bench]") {
  TestDb db;
  // 0.25 min: one (partial) minute of 15 s at 200 jobs/s.
  const auto [code, out] = bench({"--soak", "0.25", "--rate", "200"});
  INFO(out);
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("200 jobs/s for 0.25 min; a REPEATABLE READ transaction"));
  // Sizes as the minute ends; its figures after the run.
  CHECK_THAT(out, Catch::Contains("soak        minute 1 over: "));
  std::smatch m;
  const std::regex row("soak        1 +([0-9]+) +([0-9]+) +([0-9]+) +([0-9.]+) +([0-9.]+) +[0-9]+ +([0-9.]+) +([0-9.]+)");
  REQUIRE(std::regex_search(out, m, row));
  const long enqueued = std::stol(m[1]);
  CHECK(enqueued > 2500);  // 15 s at 200/s, less the start
  CHECK(std::stol(m[2]) == enqueued);
  CHECK(std::stod(m[5]) >= std::stod(m[4]));
  CHECK(std::stod(m[6]) > 0);
  const std::regex end("soak        ([0-9]+) jobs sent, ([0-9]+) completed, 0 with more than one attempt; "
                       "the held transaction was open ([0-9]+) s, holding back the xmin horizon");
  REQUIRE(std::regex_search(out, m, end));
  CHECK(m[1] == m[2]);
  CHECK(std::stol(m[3]) >= 15);
  CHECK(leftovers(db) == 0);
}

TEST_CASE("jobctl bench stops with the host's error when a host cannot start, and cleans up", "[bench]") {
  TestDb db;
  const auto [code, out] = bench({"--jobs", "10", "--plugin", plugin_dir() + "/libwrong_abi.so"});
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("jobhost exited during start-up"));
  CHECK_THAT(out, Catch::Contains("plugin ABI 2.0"));
  CHECK(leftovers(db) == 0);

  const auto [code2, out2] = bench({"--plugin", "/nonexistent/libnoop.so"});
  CHECK(code2 == 1);
  CHECK_THAT(out2, Catch::Contains("no noop plugin at /nonexistent/libnoop.so"));
}
