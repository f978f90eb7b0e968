// The admin HTTP API over real HTTP, against a host running every role; and
// job cancellation through it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"

using namespace jobhost::test;
using nlohmann::json;

namespace {

const std::string kToken = "test-token-0123456789";

struct ApiHost {
  explicit ApiHost(TestDb& db, HostOptions o = {}) {
    o.roles = "[migrator, worker, reaper, api]";
    o.extra_yaml += "api: { listen: \"127.0.0.1:0\", token: \"" + kToken + "\" }\n";
    host = start_host(write_config(db, o, "api"), "api");
    std::smatch m;
    const std::string log = host->log();
    REQUIRE(std::regex_search(log, m, std::regex("api listening on 127\\.0\\.0\\.1:([0-9]+)")));
    port = std::stoi(m[1]);
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(10, 0);
    return c;
  }
  httplib::Headers auth() const { return {{"Authorization", "Bearer " + kToken}}; }

  std::unique_ptr<Process> host;
  int port = 0;
};

json body_of(const httplib::Result& r) {
  REQUIRE(r);
  return json::parse(r->body);
}

}  // namespace

TEST_CASE("api: health, readiness, and a job created over HTTP runs and can be read back", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  auto health = c.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto ready = c.Get("/readyz");
  REQUIRE(ready);
  CHECK(ready->status == 200);
  CHECK(body_of(ready)["postgres"] == "ok");
  CHECK(body_of(ready)["redis"] == "ok");

  auto created = c.Post("/api/v1/jobs", api.auth(), R"({"type": "noop", "payload": {}, "priority": 10})", "application/json");
  REQUIRE(created);
  REQUIRE(created->status == 201);
  const std::string id = body_of(created)["id"];
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  auto got = c.Get(("/api/v1/jobs/" + id).c_str());
  REQUIRE(got);
  CHECK(got->status == 200);
  const json j = body_of(got);
  CHECK(j["status"] == "completed");
  CHECK(j["type"] == "noop");
  CHECK(j["priority"] == 10);
  CHECK(j["attempts"] == 1);
  CHECK(j["live"]["in_redis"] == false);
  CHECK(j["live"]["attempt"] == 1);
  CHECK(j["worker_id"].is_string());
}

TEST_CASE("api: writes need the bearer token: 401 without, 403 wrong", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  const std::string body = R"({"type": "noop"})";
  auto none = c.Post("/api/v1/jobs", body, "application/json");
  REQUIRE(none);
  CHECK(none->status == 401);
  auto wrong = c.Post("/api/v1/jobs", {{"Authorization", "Bearer nope"}}, body, "application/json");
  REQUIRE(wrong);
  CHECK(wrong->status == 403);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 0);
}

TEST_CASE("api: bad requests get 400 naming the field, and never hurt the host", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  const auto post = [&](const std::string& body) {
    return c.Post("/api/v1/jobs", api.auth(), body, "application/json");
  };
  const auto field_of = [&](const std::string& body) {
    auto r = post(body);
    REQUIRE(r);
    CHECK(r->status == 400);
    return body_of(r).value("field", std::string("(none)"));
  };
  CHECK(field_of(R"({"payload": {}})") == "type");
  CHECK(field_of(R"({"type": "noop", "priority": "high"})") == "priority");
  CHECK(field_of(R"({"type": "noop", "max_attempts": 0})") == "max_attempts");
  CHECK(field_of(R"({"type": "noop", "payload": [1]})") == "payload");
  CHECK(field_of(R"({"type": "noop", "run_at": "yesterday-ish"})") == "run_at");
  CHECK(field_of(R"({"type": "noop", "colour": "red"})") == "colour");
  // The plugin's own validation, before anything is stored.
  CHECK(field_of(R"({"type": "noop", "payload": {"sleep_ms": "long"}})") == "payload");
  // Malformed JSON and non-objects.
  auto bad = post(R"({"type": "noop",)");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK_THAT(body_of(bad)["error"].get<std::string>(), Catch::Contains("not valid JSON"));
  // Oversized bodies, unknown routes, bad ids.
  auto big = post(R"({"type": "noop", "payload": {"x": ")" + std::string(2 << 20, 'a') + "\"}}");
  REQUIRE(big);
  CHECK(big->status == 413);
  auto unknown = c.Get("/api/v1/nothing-here");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  CHECK(body_of(unknown)["error"].get<std::string>().find("no route") != std::string::npos);
  auto bad_id = c.Get("/api/v1/jobs/not-a-uuid");
  REQUIRE(bad_id);
  CHECK(bad_id->status == 400);
  auto missing = c.Get("/api/v1/jobs/00000000-0000-0000-0000-000000000000");
  REQUIRE(missing);
  CHECK(missing->status == 404);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 0);

  // A client that sends half a request and stalls holds one connection until
  // the read timeout; meanwhile others are served at once.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(api.port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string partial = "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ty";
  REQUIRE(write(fd, partial.data(), partial.size()) == static_cast<ssize_t>(partial.size()));
  const auto t0 = std::chrono::steady_clock::now();
  auto health = c.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  close(fd);
  CHECK(api.host->running());
}

// GET /api/v1/queues counts the live states through their own partial
// indexes, one branch each: every state and band must still be counted.
TEST_CASE("api: queues counts each live state and priority band of a queue", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  // A queue no plugin serves, so no host moves its jobs while they are counted.
  const auto put = [&](int n, int priority, const std::string& status) {
    for (int i = 0; i < n; ++i) {
      const std::string id = db.enqueue("unserved.type", "{}");
      db.scalar("UPDATE jobhost.jobs SET priority = " + std::to_string(priority) + ", status = '" + status +
                "', updated_at = now(), lease_expires_at = CASE WHEN '" + status +
                "' = 'running' THEN now() + interval '1 hour' END WHERE id = '" + id + "'");
    }
  };
  put(1, 0, "queued");               // high
  put(2, 100, "queued");             // normal
  put(3, 100, "migrated_to_redis");  // normal, waiting in Redis
  put(1, 200, "retry_scheduled");    // low, and a retry
  put(2, 100, "running");
  put(1, 100, "failed");
  put(4, 100, "completed");
  const json queues = body_of(c.Get("/api/v1/queues"));
  json q;
  for (const json& each : queues["queues"]) {
    if (each["name"] == "unserved.type") q = each;
  }
  REQUIRE(q.is_object());
  CHECK(q["waiting"] == json({{"high", 1}, {"normal", 5}, {"low", 1}}));
  CHECK(q["running"] == 2);
  CHECK(q["retry_scheduled"] == 1);
  CHECK(q["failed"] == 1);
  CHECK(q["served"] == false);
  // Asked again: the prepared statement's second run says the same.
  CHECK(body_of(c.Get("/api/v1/queues"))["queues"] == queues["queues"]);
}

TEST_CASE("api: a queue's last minute counts the attempts its jobs just made, and only those", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(db.enqueue("noop", "{}"));
  for (int i = 0; i < 2; ++i) ids.push_back(db.enqueue("noop", R"({"permanent": true})"));
  REQUIRE(eventually([&] {
    for (const auto& id : ids) {
      const std::string s = db.status(id);
      if (s != "completed" && s != "failed") return false;
    }
    return true;
  }, 30s));
  // Older attempts of the same queue, and this minute's of another: neither is noop's last minute.
  db.scalar("INSERT INTO jobhost.job_logs (job_id, status, attempt_number, created_at) SELECT '" + ids[0] +
            "', 'completed', 1, now() - interval '3 minutes' FROM generate_series(1, 5) RETURNING 1");
  const std::string other = db.enqueue("unserved.type", "{}");
  db.scalar("INSERT INTO jobhost.job_logs (job_id, status, attempt_number) SELECT '" + other +
            "', 'failed', 1 FROM generate_series(1, 7) RETURNING 1");
  const auto queue = [&](const std::string& name) {
    const json body = body_of(c.Get("/api/v1/queues"));
    for (const json& each : body["queues"]) {
      if (each["name"] == name) return each;
    }
    return json();
  };
  const json noop = queue("noop");
  REQUIRE(noop.is_object());
  CHECK(noop["last_minute"]["completed"] == 6);
  CHECK(noop["last_minute"]["failed_attempts"] == 2);
  CHECK(queue("unserved.type")["last_minute"]["failed_attempts"] == 7);
  // The chart counts every queue's attempts of the window, the older ones in their minute.
  long long completed = 0, failed = 0;
  const json minutes = body_of(c.Get("/api/v1/throughput?minutes=15"))["minutes"];
  for (const json& m : minutes) {
    completed += m["completed"].get<long long>();
    failed += m["failed"].get<long long>();
  }
  CHECK(completed == 6 + 5);
  CHECK(failed == 2 + 7);
}

TEST_CASE("api: throughput counts each minute's attempts by outcome", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  const std::string job = db.enqueue("unserved.type", "{}");
  // Rows of one minute share a created_at, so they share a minute whenever it turns.
  const auto log = [&](const std::string& status, int n, const std::string& ago) {
    db.scalar("INSERT INTO jobhost.job_logs (job_id, status, attempt_number, created_at) SELECT '" + job + "', '" +
              status + "', 1, now() - interval '" + ago + "' FROM generate_series(1, " + std::to_string(n) +
              ") RETURNING 1");
  };
  log("completed", 3, "0 seconds");
  log("cancelled", 1, "0 seconds");
  log("failed", 2, "3 minutes");
  log("retry_scheduled", 1, "3 minutes");
  log("stalled", 1, "3 minutes");
  log("completed", 5, "20 minutes");  // before the window
  const json minutes = body_of(c.Get("/api/v1/throughput?minutes=15"))["minutes"];
  REQUIRE(minutes.size() == 15);
  long long completed = 0, cancelled = 0, failed = 0, retried = 0;
  for (const json& m : minutes) {
    completed += m["completed"].get<long long>();
    cancelled += m["cancelled"].get<long long>();
    failed += m["failed"].get<long long>();
    retried += m["retried"].get<long long>();
    if (m["failed"] == 2) CHECK(m["retried"] == 2);  // the same minute
  }
  CHECK(completed == 3);
  CHECK(cancelled == 1);
  CHECK(failed == 2);
  CHECK(retried == 2);
  CHECK(minutes.back()["minute"] > minutes.front()["minute"]);
}

TEST_CASE("api: queues, DLQ list and replay by id and by queue", "[api]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  const std::string a = db.enqueue("noop", R"({"permanent": true})");
  const std::string b = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return db.status(a) == "failed" && db.status(b) == "failed"; }, 20s));

  const json queues = body_of(c.Get("/api/v1/queues"));
  REQUIRE(queues["queues"].size() == 1);
  CHECK(queues["queues"][0]["name"] == "noop");
  CHECK(queues["queues"][0]["failed"] == 2);
  CHECK(queues["queues"][0]["served"] == true);
  REQUIRE(queues["plugins"].size() == 1);
  CHECK(queues["plugins"][0]["name"] == "noop");
  CHECK(queues["plugins"][0]["pool_size"] == 4);

  const json dlq = body_of(c.Get("/api/v1/dlq?queue=noop"));
  REQUIRE(dlq["jobs"].size() == 2);
  CHECK_THAT(dlq["jobs"][0]["last_error"].get<std::string>(), Catch::Contains("permanent failure as asked"));
  auto bad_limit = c.Get("/api/v1/dlq?limit=0");
  REQUIRE(bad_limit);
  CHECK(bad_limit->status == 400);
  CHECK(body_of(bad_limit)["field"] == "limit");

  // Replay exactly `a`; its payload fails again, so count attempts from job_logs.
  auto one = c.Post(("/api/v1/dlq/" + a + "/replay").c_str(), api.auth(), "", "application/json");
  REQUIRE(one);
  CHECK(one->status == 200);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + a + "'") == 2; }, 20s));
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + b + "'") == 1);
  auto again = c.Post(("/api/v1/dlq/" + db.enqueue("noop") + "/replay").c_str(), api.auth(), "", "application/json");
  REQUIRE(again);
  CHECK(again->status == 404);

  REQUIRE(eventually([&] { return db.status(a) == "failed"; }, 20s));
  auto all = c.Post("/api/v1/dlq/replay?queue=noop", api.auth(), "", "application/json");
  REQUIRE(all);
  CHECK(all->status == 200);
  CHECK(body_of(all)["replayed"] == 2);
  auto no_queue = c.Post("/api/v1/dlq/replay", api.auth(), "", "application/json");
  REQUIRE(no_queue);
  CHECK(no_queue->status == 400);
}

TEST_CASE("api: a queued job is cancelled at once, a running one stops and ends cancelled", "[api][cancel]") {
  TestDb db;
  HostOptions o;
  o.heartbeat_ms = 200;
  ApiHost api(db, o);
  auto c = api.client();
  const std::string later = db.scalar(
      "SELECT jobhost.enqueue('noop', '{}', run_at => now() + interval '1 hour')::text");
  auto r1 = c.Post(("/api/v1/jobs/" + later + "/cancel").c_str(), api.auth(), "", "application/json");
  REQUIRE(r1);
  CHECK(r1->status == 200);
  CHECK(body_of(r1)["result"] == "cancelled");
  CHECK(db.status(later) == "cancelled");

  const std::string running = db.enqueue("noop", R"({"sleep_ms": 20000})");
  REQUIRE(eventually([&] { return db.status(running) == "running"; }, 20s));
  const auto t0 = std::chrono::steady_clock::now();
  auto r2 = c.Post(("/api/v1/jobs/" + running + "/cancel").c_str(), api.auth(), "", "application/json");
  REQUIRE(r2);
  CHECK(r2->status == 202);
  CHECK(body_of(r2)["result"] == "cancel_requested");
  REQUIRE(eventually([&] { return db.status(running) == "cancelled"; }, 10s));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // not the 20 s sleep
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + running + "' AND status = 'cancelled'") == 1);

  auto r3 = c.Post(("/api/v1/jobs/" + running + "/cancel").c_str(), api.auth(), "", "application/json");
  REQUIRE(r3);
  CHECK(r3->status == 409);
}

TEST_CASE("api: /metrics counts jobs and passes promtool check metrics", "[api][metrics]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  db.enqueue_many("noop", "{}", 25);
  const std::string bad = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status IN ('completed', 'failed')") == 26; }, 20s));
  // Outcomes are counted when the worker settles them, before the completer writes.
  auto r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK_THAT(r->get_header_value("Content-Type"), Catch::StartsWith("text/plain; version=0.0.4"));
  const std::string text = r->body;
  CHECK_THAT(text, Catch::Contains("jobs_completed_total{queue=\"noop\"} 25"));
  CHECK_THAT(text, Catch::Contains("jobs_failed_total{queue=\"noop\"} 1"));
  CHECK_THAT(text, Catch::Contains("job_duration_seconds_count{queue=\"noop\"} 26"));
  CHECK_THAT(text, Catch::Contains("dlq_size{queue=\"noop\"} 1"));
  CHECK_THAT(text, Catch::Contains("queue_depth{queue=\"noop\",priority=\"normal\"} 0"));
  CHECK_THAT(text, Catch::Contains("plugin_pool_size{plugin=\"noop\"} 4"));
  CHECK_THAT(text, Catch::Contains("migrator_batch_seconds_count "));

  const auto file = std::filesystem::temp_directory_path() / (db.prefix() + "-metrics.txt");
  std::ofstream(file) << text;
  const auto [code, out] = run({"/bin/sh", "-c", "promtool check metrics < " + file.string()});
  INFO(out);
  CHECK(code == 0);
}

TEST_CASE("api: a running job's reported progress reaches its row, jobctl status and the running list", "[api][sdk]") {
  TestDb db;
  HostOptions o;
  o.heartbeat_ms = 200;
  ApiHost api(db, o);
  auto c = api.client();
  // noop reports sleep progress through heartbeat(); nothing else writes it.
  const auto id = db.enqueue("noop", R"({"sleep_ms": 4000})");
  REQUIRE(eventually([&] {
    const std::string p = db.field(id, "progress");
    return !p.empty() && std::stod(p) >= 0.2 && std::stod(p) < 1.0;
  }, 10s));
  const json view = body_of(c.Get("/api/v1/jobs/" + id));
  REQUIRE(view["progress"].is_number());
  CHECK(view["progress"].get<double>() > 0.0);
  const json running = body_of(c.Get("/api/v1/running"));
  INFO(running.dump());
  REQUIRE(running["jobs"].size() == 1);
  CHECK(running["jobs"][0]["id"] == id);
  CHECK(running["jobs"][0]["progress"].get<double>() > 0.0);
  const auto [code, out] = run({bin_dir() + "/jobctl", "status", id}, {"DATABASE_URL=" + db.url(), "REDIS_URL=" + db.redis_url()});
  CHECK(code == 0);
  CHECK_THAT(out, Catch::Matches("(.|\n)*progress +[0-9.]+ %(.|\n)*"));
  // The value only grows while the attempt runs, and the row keeps the last one.
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 15s));
  CHECK(std::stod(db.field(id, "progress")) >= 0.5);
  // A job that reports nothing shows none.
  const auto quiet = db.enqueue("noop", R"({"fail_attempts": 1, "retry_after_ms": 60000})");
  REQUIRE(eventually([&] { return db.status(quiet) == "retry_scheduled"; }, 10s));
  CHECK(db.field(quiet, "progress").empty());
}

TEST_CASE("api: pause and resume a queue or one key, list its keys, and enqueue with a flow key", "[api][flow]") {
  TestDb db;
  HostOptions o;
  o.plugin_yaml = "    flow:\n      key: /tenant\n      per_key: { concurrency: 2 }\n      overrides:\n"
                  "        big: { concurrency: 5 }\n";
  ApiHost api(db, o);
  auto c = api.client();
  const auto created = c.Post("/api/v1/jobs", api.auth(), R"({"type": "noop", "payload": {}, "flow_key": "big"})",
                              "application/json");
  REQUIRE(created);
  CHECK(created->status == 201);
  const std::string id = body_of(created)["id"];
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(body_of(c.Get(("/api/v1/jobs/" + id).c_str()))["flow_key"] == "big");
  const auto bad = c.Post("/api/v1/jobs", api.auth(), R"({"type": "noop", "flow_key": 7})", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(body_of(bad)["field"] == "flow_key");

  // Writes need the token.
  auto r = c.Post("/api/v1/queues/noop/pause", "", "application/json");
  REQUIRE(r);
  CHECK(r->status == 401);
  r = c.Post("/api/v1/queues/noop/pause?key=t1", api.auth(), "", "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(body_of(r) == json{{"queue", "noop"}, {"key", "t1"}, {"paused", true}, {"changed", true}});
  db.enqueue("noop", R"({"tenant": "t1"})");
  db.enqueue("noop", R"({"tenant": "t2"})");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 't2' AND status = 'completed'") == 1; }, 20s));
  const json keys = body_of(c.Get("/api/v1/queues/noop/keys?limit=10"));
  REQUIRE(keys["keys"].size() >= 1);
  CHECK(keys["keys"][0]["key"] == "t1");
  CHECK(keys["keys"][0]["waiting"] == 1);
  CHECK(keys["keys"][0]["paused"] == true);
  CHECK(keys["keys"][0]["limits"] == json{{"concurrency", 2}});
  CHECK(keys["flow"]["overrides"]["big"] == json{{"concurrency", 5}});
  json queues = body_of(c.Get("/api/v1/queues"));
  CHECK(queues["queues"][0]["paused_keys"] == 1);
  CHECK(queues["queues"][0]["keyed"] == true);

  r = c.Post("/api/v1/queues/noop/resume?key=t1", api.auth(), "", "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE flow_key = 't1' AND status = 'completed'") == 1; }, 20s));
  r = c.Post("/api/v1/queues/noop/pause", api.auth(), "", "application/json");
  REQUIRE(r);
  CHECK(body_of(r)["changed"] == true);
  queues = body_of(c.Get("/api/v1/queues"));
  CHECK(queues["queues"][0]["paused"] == true);
  r = c.Post("/api/v1/queues/noop/pause", api.auth(), "", "application/json");
  CHECK(body_of(r)["changed"] == false);  // already paused
  CHECK(c.Post("/api/v1/queues/noop/resume", api.auth(), "", "application/json")->status == 200);
}

TEST_CASE("api: pausing a key of a queue that is not dispatched by key is a 409 naming the key", "[api][flow]") {
  TestDb db;
  ApiHost api(db);
  auto c = api.client();
  const auto r = c.Post("/api/v1/queues/noop/pause?key=a", api.auth(), "", "application/json");
  REQUIRE(r);
  CHECK(r->status == 409);
  CHECK(body_of(r)["field"] == "key");
  CHECK_THAT(body_of(r)["error"].get<std::string>(), Catch::Contains("is not dispatched by key"));
}
