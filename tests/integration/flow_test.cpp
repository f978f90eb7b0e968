// Flow control (DESIGN §9) with real PostgreSQL, Redis and several jobhost
// processes: rates, concurrency limits per queue and per key, fairness
// between keys, slots of a killed host, Redis losing its data, handlers'
// limiters and throttling, pause and resume.
#include <csignal>

#include <algorithm>
#include <map>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "redis.hpp"

using namespace jobhost::test;

namespace {

std::pair<int, std::string> jobctl(const TestDb& db, std::vector<std::string> args) {
  args.insert(args.begin(), bin_dir() + "/jobctl");
  return run(args, {"DATABASE_URL=" + db.url(), "REDIS_URL=" + db.redis_url(), "JOBHOST_REDIS_PREFIX=" + db.prefix()});
}

long long completed(TestDb& db) {
  return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'");
}

long long completed_twice(TestDb& db) {
  return db.count(
      "SELECT count(*) FROM (SELECT job_id FROM jobhost.job_logs WHERE status = 'completed' "
      "GROUP BY job_id HAVING count(*) > 1) t");
}

// Handler start times (ms since the epoch) of the completed attempts, oldest first.
std::vector<double> starts(TestDb& db, const std::string& where = "true") {
  pqxx::nontransaction tx(db.conn());
  std::vector<double> out;
  for (const auto& r : tx.exec("SELECT extract(epoch FROM l.started_at) * 1000 FROM jobhost.job_logs l "
                               "JOIN jobhost.jobs j ON j.id = l.job_id WHERE l.status = 'completed' AND " +
                               where + " ORDER BY 1")) {
    out.push_back(r[0].as<double>());
  }
  return out;
}

// The most completed attempts of one key running at the same instant, from
// the attempts' logged intervals.
std::map<std::string, int> peak_running_by_key(TestDb& db) {
  pqxx::nontransaction tx(db.conn());
  std::map<std::string, std::vector<std::pair<double, int>>> events;
  for (const auto& r : tx.exec("SELECT coalesce(j.flow_key, ''), extract(epoch FROM l.started_at) * 1000, "
                               "extract(epoch FROM l.finished_at) * 1000 FROM jobhost.job_logs l "
                               "JOIN jobhost.jobs j ON j.id = l.job_id WHERE l.status = 'completed'")) {
    auto& e = events[r[0].c_str()];
    e.emplace_back(r[1].as<double>(), +1);
    e.emplace_back(r[2].as<double>(), -1);
  }
  std::map<std::string, int> out;
  for (auto& [key, e] : events) {
    std::sort(e.begin(), e.end());  // an end sorts before a start at the same instant
    int now = 0;
    for (const auto& [t, d] : e) out[key] = std::max(out[key], now += d);
  }
  return out;
}

std::vector<std::unique_ptr<Process>> start_hosts(TestDb& db, const HostOptions& o, int n) {
  std::vector<std::unique_ptr<Process>> hosts;
  for (int i = 0; i < n; ++i) {
    const std::string tag = "flow-host-" + std::to_string(i);
    hosts.push_back(start_host(write_config(db, o, tag), tag));
  }
  return hosts;
}

void enqueue_keyed(TestDb& db, const std::string& key, const std::string& payload, int n) {
  pqxx::work tx(db.conn());
  tx.exec_params("SELECT count(*) FROM jobhost.enqueue_many('noop', array_fill($1::jsonb, ARRAY[$2::int]), "
                 "flow_key => $3)",
                 payload, n, key);
  tx.commit();
}

}  // namespace

TEST_CASE("a queue rate holds across three hosts: starts never exceed the rate plus the burst", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 8;
  o.plugin_yaml = "    flow:\n      rate: { limit: 20, per_ms: 1000, burst: 5 }\n";
  auto hosts = start_hosts(db, o, 3);
  constexpr int kJobs = 100;
  db.enqueue_many("noop", "{}", kJobs);
  REQUIRE(eventually([&] { return completed(db) == kJobs; }, 60s));
  const std::vector<double> t = starts(db);
  REQUIRE(t.size() == kJobs);
  size_t most_in_a_second = 0;
  for (size_t i = 0, j = 0; i < t.size(); ++i) {
    while (t[j] < t[i] - 1000.0) ++j;
    most_in_a_second = std::max(most_in_a_second, i - j + 1);
  }
  CHECK(most_in_a_second <= 20 + 5);
  // The burst goes at once, then one start every 50 ms.
  const double expected_ms = (kJobs - 5) * 1000.0 / 20;
  const double took_ms = t.back() - t.front();
  CHECK(took_ms >= 0.85 * expected_ms);
  CHECK(took_ms <= 1.15 * expected_ms);
  CHECK(completed_twice(db) == 0);
  // Held back, not attempted: every job ran exactly once.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1") == 0);
}

TEST_CASE("per-key concurrency holds across three hosts while other keys run freely", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 6;
  o.plugin_yaml = "    flow:\n      key: /tenant\n      per_key: { concurrency: 2 }\n"
                  "      overrides:\n        big: { concurrency: 3 }\n";
  auto hosts = start_hosts(db, o, 3);
  for (const char* tenant : {"a", "b", "c", "big"}) {
    db.enqueue_many("noop", std::string(R"({"sleep_ms": 150, "tenant": ")") + tenant + "\"}", 16);
  }
  REQUIRE(eventually([&] { return completed(db) == 64; }, 60s));
  const auto peaks = peak_running_by_key(db);
  REQUIRE(peaks.size() == 4);
  CHECK(peaks.at("a") == 2);
  CHECK(peaks.at("b") == 2);
  CHECK(peaks.at("c") == 2);
  CHECK(peaks.at("big") == 3);
  // The keys ran side by side: more than one key's limit at once.
  CHECK(peak_running(db) > 3);
  CHECK(db.scalar("SELECT flow_key FROM jobhost.jobs WHERE payload->>'tenant' = 'big' LIMIT 1") == "big");
  CHECK(completed_twice(db) == 0);
}

TEST_CASE("a small key is not starved by a big one enqueued first, in PostgreSQL and in Redis", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 8;
  o.max_in_redis = 1000;  // far below A's backlog: the claim in PostgreSQL must be fair too
  o.plugin_yaml = "    flow:\n      key: /tenant\n";
  auto host = start_host(write_config(db, o));
  enqueue_keyed(db, "A", "{}", 50000);
  REQUIRE(eventually([&] { return completed(db) > 0; }, 20s));
  enqueue_keyed(db, "B", "{}", 200);
  const std::string b_enqueued = db.scalar("SELECT max(created_at) FROM jobhost.jobs WHERE flow_key = 'B'");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 'B' AND status = 'completed'") == 200; }, 60s));
  const long long a_meanwhile = db.count(
      "SELECT count(*) FROM jobhost.jobs WHERE flow_key = 'A' AND started_at > '" + b_enqueued +
      "' AND started_at < (SELECT max(started_at) FROM jobhost.jobs WHERE flow_key = 'B')");
  INFO("A jobs started between B's enqueue and B's last start: " << a_meanwhile);
  CHECK(a_meanwhile < 2000);
  REQUIRE(eventually([&] { return completed(db) == 50200; }, 120s));
  CHECK(completed_twice(db) == 0);
}

TEST_CASE("the concurrency slots of a killed host come back when its leases expire", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 4;
  o.lease_ms = 2000;
  o.plugin_yaml = "    flow:\n      concurrency: 2\n";
  auto a = start_host(write_config(db, o, "host-a"), "host-a");
  db.enqueue_many("noop", R"({"sleep_ms": 60000})", 2);
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'running' AND worker_id LIKE 'host-a/%'") == 2;
  }, 20s));
  db.enqueue_many("noop", R"({"sleep_ms": 10})", 20);
  auto b = start_host(write_config(db, o, "host-b"), "host-b");
  a->kill9();
  REQUIRE(a->wait(5s) == 128 + SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  // The slots are held until the dead host's leases expire, then free: the
  // short jobs run on host-b (two at a time) and the long ones start again.
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'sleep_ms' = '10' AND status = 'completed'") == 20;
  }, 30s));
  CHECK(std::chrono::steady_clock::now() - killed >= 1500ms);
  CHECK(peak_running(db) <= 2);
  // Redis frees a dead host's slots when their leases expire; the reaper
  // records the stalled attempts on its own next pass, which may come after
  // the short jobs have finished.
  CHECK(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'stalled'") == 2; }, 30s));
}

TEST_CASE("after Redis loses its data, limits start empty and every job completes once", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 4;
  o.plugin_yaml = "    flow:\n      key: /tenant\n      per_key: { concurrency: 1, rate: { limit: 200, per_ms: 1000 } }\n";
  auto hosts = start_hosts(db, o, 2);
  for (const char* tenant : {"a", "b", "c"}) {
    db.enqueue_many("noop", std::string(R"({"sleep_ms": 5, "tenant": ")") + tenant + "\"}", 150);
  }
  REQUIRE(eventually([&] { return completed(db) > 30; }, 20s));
  {
    jobhost::Redis redis(db.redis_url());
    redis.command({"FLUSHALL"});
  }
  REQUIRE(eventually([&] { return completed(db) == 450; }, 90s));
  CHECK(completed_twice(db) == 0);
  // The limit held before and after the loss (a job running across it may overlap one more).
  for (const auto& [key, peak] : peak_running_by_key(db)) {
    INFO("key " << key);
    CHECK(peak <= 2);
  }
}

TEST_CASE("a handler held back by a full limiter is throttled without using an attempt", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 3;
  o.extra_yaml = "limiters:\n  \"test:*\": { concurrency: 1 }\n";
  auto host = start_host(write_config(db, o));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(db.enqueue("noop", R"({"acquire": "test:one", "sleep_ms": 300})"));
  REQUIRE(eventually([&] { return completed(db) == 3; }, 30s));
  for (const auto& id : ids) CHECK(db.field(id, "attempt_count") == "1");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'throttled'") > 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'throttled' AND log_message LIKE "
                 "'%limiter test:one is full%'") > 0);
  // One at a time: the limiter's single slot was never shared.
  CHECK(peak_running(db) == 1);
}

TEST_CASE("a hold-off made on one host holds back a name no limiter governs on another host", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 2;
  auto a = start_host(write_config(db, o, "host-a"), "host-a");
  const std::string holder = db.enqueue("noop", R"({"hold_off": {"name": "relay:free", "ms": 5000}})");
  REQUIRE(eventually([&] { return db.status(holder) == "completed"; }, 20s));
  a->signal(SIGTERM);
  REQUIRE(a->wait(20s) == 0);
  // Host-b never saw the hold made: it learns it from Redis.
  auto b = start_host(write_config(db, o, "host-b"), "host-b");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(db.enqueue("noop", R"({"acquire": "relay:free"})"));
  REQUIRE(eventually([&] { return completed(db) == 5; }, 30s));
  const std::string in_list = "('" + ids[0] + "','" + ids[1] + "','" + ids[2] + "','" + ids[3] + "')";
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE id IN " + in_list + " AND worker_id LIKE 'host-b/%'") == 4);
  // Each was held back first (no attempt used), and none ran before the hold ended.
  CHECK(db.count("SELECT count(DISTINCT job_id) FROM jobhost.job_logs WHERE status = 'throttled' AND job_id IN " +
                 in_list) == 4);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE id IN " + in_list + " AND attempt_count <> 1") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs l, jobhost.jobs h WHERE h.id = '" + holder +
                 "' AND l.status = 'completed' AND l.job_id IN " + in_list +
                 " AND l.started_at < h.started_at + interval '4900 ms'") == 0);
}

TEST_CASE("pausing a queue or one key stops new starts on every host within a second, and resume restarts them",
          "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 4;
  o.plugin_yaml = "    flow:\n      key: /tenant\n";
  auto hosts = start_hosts(db, o, 2);
  db.enqueue_many("noop", R"({"sleep_ms": 20, "tenant": "a"})", 600);
  db.enqueue_many("noop", R"({"sleep_ms": 20, "tenant": "b"})", 600);
  REQUIRE(eventually([&] { return completed(db) > 40; }, 20s));

  // One key: a stops, b goes on.
  auto [code, out] = jobctl(db, {"queue", "pause", "noop", "--key", "a"});
  REQUIRE(code == 0);
  CHECK_THAT(out, Catch::Contains("key 'a' of queue noop paused"));
  std::this_thread::sleep_for(1s);
  const std::string paused_at = db.scalar("SELECT now()");
  const long long b_before = db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 'b' AND status = 'completed'");
  std::this_thread::sleep_for(1s);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 'a' AND started_at > '" + paused_at + "'") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 'b' AND status = 'completed'") > b_before);
  std::tie(code, out) = jobctl(db, {"queue", "keys", "noop"});
  CHECK(code == 0);
  CHECK_THAT(out, Catch::Contains("PAUSED"));

  // The whole queue, told to PostgreSQL only (no Redis URL): still within a second.
  std::tie(code, out) = run({bin_dir() + "/jobctl", "queue", "pause", "noop"}, {"DATABASE_URL=" + db.url(), "REDIS_URL="});
  REQUIRE(code == 0);
  std::this_thread::sleep_for(1s);
  const std::string all_paused_at = db.scalar("SELECT now()");
  std::this_thread::sleep_for(1s);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE started_at > '" + all_paused_at + "'") == 0);
  std::tie(code, out) = jobctl(db, {"queues"});
  CHECK_THAT(out, Catch::Contains("PAUSED"));

  // A pause survives a host restart.
  hosts[0]->signal(SIGTERM);
  REQUIRE(hosts[0]->wait(15s) == 0);
  hosts[0] = start_host(write_config(db, o, "flow-host-0"), "flow-host-0");
  std::this_thread::sleep_for(1s);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE started_at > '" + all_paused_at + "'") == 0);

  CHECK(jobctl(db, {"queue", "resume", "noop"}).first == 0);
  CHECK(jobctl(db, {"queue", "resume", "noop", "--key", "a"}).first == 0);
  REQUIRE(eventually([&] { return completed(db) == 1200; }, 60s));
  CHECK(completed_twice(db) == 0);
  // Nothing held back was an attempt.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1") == 0);
}

TEST_CASE("pausing a key of a queue that is not dispatched by key is refused", "[flow]") {
  TestDb db;
  db.enqueue("noop", "{}");
  const auto [code, out] = jobctl(db, {"queue", "pause", "noop", "--key", "a"});
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("is not dispatched by key"));
}

TEST_CASE("changed limits apply on SIGHUP without a restart", "[flow]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 4;
  o.plugin_yaml = "    flow:\n      concurrency: 1\n";
  const std::string config = write_config(db, o);
  auto host = start_host(config);
  db.enqueue_many("noop", R"({"sleep_ms": 100})", 60);
  REQUIRE(eventually([&] { return completed(db) >= 5; }, 20s));
  o.plugin_yaml = "    flow:\n      concurrency: 3\n";
  write_config(db, o);
  const std::string reloaded_at = db.scalar("SELECT now()");
  host->signal(SIGHUP);
  REQUIRE(host->wait_for_log("reload applied", 10s));
  REQUIRE(eventually([&] { return completed(db) == 60; }, 60s));
  CHECK(peak_running(db, "started_at < '" + reloaded_at + "'") == 1);
  CHECK(peak_running(db) == 3);
  CHECK(completed_twice(db) == 0);
}
