// Per-plugin autoscaling inside a host (DESIGN §5): a pool grows toward
// concurrency.max while its queue is deep, stops growing above the memory
// threshold, and shrinks toward min when idle.
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

namespace {

// The number of threads of a process, from /proc: the pool's workers are threads.
int threads_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

}  // namespace

TEST_CASE("autoscaling: a deep queue grows the pool to max, idleness shrinks it to min", "[autoscaling]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 8;
  o.plugin_yaml = "    scaling: { queue_depth_above: 20, idle_ms: 800 }\n";
  auto host = start_host(write_config(db, o));
  CHECK(host->log().find("1..8 (elastic)") != std::string::npos);
  db.enqueue_many("noop", R"({"sleep_ms": 25})", 600);
  // One worker would need 15 s; the pool must grow.
  REQUIRE(host->wait_for_log("-> 8 workers (queue depth", 15s));
  const int at_max = threads_of(host->pid());
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 600; }, 20s));
  REQUIRE(host->wait_for_log("-> 1 workers (idle for 800 ms)", 15s));
  // The seven extra workers' threads really ended.
  CHECK(eventually([&] { return threads_of(host->pid()) <= at_max - 7; }, 5s));
  INFO(host->log());
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == 600);  // each ran once
  // Growth came in steps of a quarter of the range (1 -> 3 -> 5 -> 7 -> 8).
  CHECK(host->log().find("pool noop: 1 -> 3 workers") != std::string::npos);
}

TEST_CASE("autoscaling: growth stops above the memory threshold", "[autoscaling]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 8;
  // Any machine uses more than 0.01 % of its memory: growth is always blocked.
  o.plugin_yaml = "    scaling: { queue_depth_above: 20, memory_percent_above: 0.01, idle_ms: 800 }\n";
  auto host = start_host(write_config(db, o));
  db.enqueue_many("noop", R"({"sleep_ms": 10})", 200);
  REQUIRE(host->wait_for_log("not growing past 1 workers: memory use", 10s));
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == 200; }, 30s));
  INFO(host->log());
  CHECK(host->log().find("-> 3 workers") == std::string::npos);
}
