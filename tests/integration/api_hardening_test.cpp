// The admin API under attack, on loopback: probes that cannot be starved, the
// connection, timeout, body and rate limits, and a bounded fuzz of the HTTP
// layer and of every write route's JSON. Every loop here is bounded in count
// and time (bench/http_load.hpp), and the host's job processing is checked to
// carry on undisturbed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <numeric>
#include <regex>
#include <thread>

#include "harness.hpp"
#include "http_load.hpp"

using namespace jobhost::test;
using namespace jobhost::load;
using nlohmann::json;

namespace {

const std::string kToken = "hardening-token-0123456789";
const std::string kAuth = "Authorization: Bearer " + kToken + "\r\n";
const std::string kLocal = "127.0.0.1";

// A host with every role but the scheduler, its API on free ports; api_yaml
// goes under api: (indented by 2).
struct HardenedHost {
  HardenedHost(TestDb& db, const std::string& api_yaml, HostOptions o = {}) {
    o.roles = "[migrator, worker, reaper, api]";
    o.extra_yaml += "api:\n  listen: \"127.0.0.1:0\"\n  health_listen: \"127.0.0.1:0\"\n  token: \"" +
                    kToken + "\"\n" + api_yaml;
    host = start_host(write_config(db, o, "hardening"), "hardening");
    port = port_in_log("api listening on 127\\.0\\.0\\.1:([0-9]+)");
    health_port = port_in_log("api health listening on 127\\.0\\.0\\.1:([0-9]+)");
  }
  int port_in_log(const std::string& pattern) const {
    std::smatch m;
    const std::string log = host->log();
    REQUIRE(std::regex_search(log, m, std::regex(pattern)));
    return std::stoi(m[1]);
  }
  std::unique_ptr<Process> host;
  int port = 0;
  int health_port = 0;
};

// Every job of the test database finished after exactly one attempt.
void check_each_job_ran_once(TestDb& db, long long jobs) {
  REQUIRE(eventually(
      [&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == jobs; }, 60s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == jobs);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") == jobs);
}

// A connected socket from source that has sent `sent` (maybe nothing).
int open_socket(const std::string& source, int port, const std::string& sent = "") {
  require_loopback(source);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in src{}, dst{};
  src.sin_family = dst.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &src.sin_addr);
  inet_pton(AF_INET, kLocal.c_str(), &dst.sin_addr);
  dst.sin_port = htons(static_cast<uint16_t>(port));
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0);
  if (!sent.empty())
    REQUIRE(send(fd, sent.data(), sent.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(sent.size()));
  return fd;
}

// Seconds until the server closes fd (reading and dropping what it sends), or
// a negative number when it is still open after `limit`.
double seconds_until_closed(int fd, std::chrono::milliseconds limit, Clock::time_point since = Clock::now()) {
  const auto deadline = since + limit;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (poll(&p, 1, std::max(left, 1)) == 1) {
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return std::chrono::duration<double>(Clock::now() - since).count();
    }
  }
  return -1;
}

std::string deep(int levels) {
  return std::string(static_cast<size_t>(levels), '[') + std::string(static_cast<size_t>(levels), ']');
}

}  // namespace

TEST_CASE(
    "api: probes answer within 100 ms (p99) and honest clients are served while 1,000 connections stall "
    "and garbage arrives at 1,000 requests/s, and jobs run on",
    "[api][attack]") {
  TestDb db;
  HardenedHost api(db, "");  // the default limits
  const std::string id = db.enqueue("noop");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  const auto honest = [&](long) { return get_request("/api/v1/jobs/" + id); };

  // Two honest clients at 25 requests/s each, the way a dashboard or a
  // producer uses the API: first alone...
  const Throughput calm = closed_loop(kLocal, api.port, 2, Clock::now() + 3s, honest, 200, kLocal, 25);
  INFO("unloaded honest: " << calm.rate() << " req/s, " << calm.latencies.summary());

  // ...then with a drain in the background and the attack on api.listen.
  const int kJobs = 1500;
  db.enqueue_many("noop", R"({"sleep_ms": 5})", kJobs);
  AttackOptions o;
  o.port = api.port;
  o.stalled = 1000;
  o.stall_sources = 20;
  o.garbage_per_second = 1000;
  o.garbage_threads = 4;
  o.token = kToken;
  o.seed = 20261124;
  Attack attack(o);
  attack.start();
  REQUIRE(eventually([&] { return attack.open_stalled() >= 950; }, 15s));
  const auto t0 = Clock::now();
  const long garbage_before = attack.garbage_sent();
  const auto deadline = t0 + 6s;
  Latencies health_h, health_r, main_h, main_r;
  std::vector<std::thread> probes;
  probes.emplace_back([&] { health_h = probe(kLocal, api.health_port, "/healthz", 20ms, deadline); });
  probes.emplace_back([&] { health_r = probe(kLocal, api.health_port, "/readyz", 20ms, deadline); });
  probes.emplace_back([&] { main_h = probe(kLocal, api.port, "/healthz", 20ms, deadline); });
  probes.emplace_back([&] { main_r = probe(kLocal, api.port, "/readyz", 20ms, deadline); });
  // The stalled connections dropped at the header deadline come back within
  // a poll or two: count them through the window.
  std::vector<int> stalled;
  probes.emplace_back([&] {
    while (Clock::now() < deadline) {
      stalled.push_back(attack.open_stalled());
      std::this_thread::sleep_for(100ms);
    }
  });
  const Throughput attacked = closed_loop(kLocal, api.port, 2, deadline, honest, 200, kLocal, 25);
  for (auto& t : probes) t.join();
  const double mean_stalled =
      std::accumulate(stalled.begin(), stalled.end(), 0.0) / static_cast<double>(stalled.size());
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const std::string summary = attack.summary();
  const long garbage = attack.garbage_sent() - garbage_before;
  const auto statuses = attack.garbage_statuses();
  attack.stop();

  INFO("attack: " << summary);
  INFO("health listener /healthz: " << health_h.summary());
  INFO("health listener /readyz: " << health_r.summary());
  INFO("api.listen /healthz: " << main_h.summary());
  INFO("api.listen /readyz: " << main_r.summary());
  INFO("attacked honest: " << attacked.rate() << " req/s, " << attacked.latencies.summary());
  INFO("stalled connections open, mean over the window: " << mean_stalled);
  CHECK(mean_stalled >= 900);
  CHECK(garbage / seconds >= 700);  // the generator kept up (roughly 1,000/s)
  for (const Latencies* l : {&health_h, &health_r, &main_h, &main_r}) {
    CHECK(l->ms.size() >= 100);
    CHECK(l->failures == 0);
    CHECK(l->percentile(0.99) < 100);
  }
  CHECK(attacked.rate() >= 0.9 * calm.rate());
  CHECK(attacked.latencies.percentile(0.99) < 500);
  // Garbage gets 4xx (some harmless GETs with odd queries a 200), never a 500.
  for (const auto& [status, n] : statuses) {
    INFO("garbage answered " << status << " " << n << " times");
    CHECK(status != 500);
  }
  CHECK(statuses.count(429) == 1);  // the garbage's address is over its rate
  CHECK(api.host->running());
  check_each_job_ran_once(db, kJobs + 1);  // and the garbage stored nothing
}

TEST_CASE(
    "api: connections are bounded in total and per client, headers, bodies and idle connections have "
    "deadlines, the body limit is applied before reading, and rates are limited per client and per token",
    "[api][limits]") {
  TestDb db;
  HardenedHost api(db,
                   "  max_connections: 40\n"
                   "  max_connections_per_client: 10\n"
                   "  header_timeout_ms: 1500\n"
                   "  body_timeout_ms: 800\n"
                   "  idle_timeout_ms: 700\n"
                   "  max_body_bytes: 65536\n"
                   "  rate_limit:\n"
                   "    per_client: { requests_per_s: 5, burst: 20 }\n"
                   "    per_token: { requests_per_s: 5, burst: 30 }\n");
  const auto get_from = [&](const std::string& source, const std::string& path) {
    return request_once(kLocal, api.port, get_request(path), 2s, source);
  };

  SECTION("connection limits, and the header deadline that a trickle does not extend") {
    std::vector<int> held;
    for (int i = 0; i < 10; ++i) held.push_back(open_socket("127.0.0.3", api.port));
    std::this_thread::sleep_for(300ms);
    const Response mine = get_from("127.0.0.3", "/api/v1/queues");
    CHECK(mine.status == 429);
    CHECK_THAT(mine.body, Catch::Contains("api.max_connections_per_client"));
    CHECK(get_from("127.0.0.4", "/api/v1/queues").status == 200);
    for (int i = 0; i < 30; ++i)
      held.push_back(open_socket("127.0.0." + std::to_string(5 + i / 10), api.port));
    std::this_thread::sleep_for(300ms);
    const Response full = get_from("127.0.0.8", "/api/v1/queues");
    CHECK(full.status == 503);
    CHECK_THAT(full.body, Catch::Contains("api.max_connections"));
    CHECK(full.headers.count("retry-after") == 1);
    // The probes' own listener is not full.
    CHECK(request_once(kLocal, api.health_port, get_request("/healthz"), 1s).status == 200);
    // None of the 40 sent a header: all are dropped at the header deadline.
    const auto t0 = Clock::now();
    for (const int fd : held) {
      const double s = seconds_until_closed(fd, 3s, t0);
      CHECK(s > 0);
      close(fd);
    }
    CHECK(get_from("127.0.0.8", "/api/v1/queues").status == 200);
    const std::string metrics = get_from("127.0.0.8", "/metrics").body;
    CHECK_THAT(metrics, Catch::Contains("api_refused_total{reason=\"max_connections_per_client\"} "));
    CHECK_THAT(metrics, Catch::Contains("api_refused_total{reason=\"max_connections\"} "));

    // Half a request line, then a byte every 100 ms: still closed at ~1.5 s.
    const int slow = open_socket("127.0.0.11", api.port, "GET /api/v1/qu");
    const auto start = Clock::now();
    double closed_after = -1;
    while (Clock::now() - start < 3s) {
      closed_after = seconds_until_closed(slow, 100ms);
      if (closed_after > 0) break;
      send(slow, "e", 1, MSG_NOSIGNAL);
    }
    closed_after = std::chrono::duration<double>(Clock::now() - start).count();
    CHECK(closed_after > 1.3);
    CHECK(closed_after < 2.6);
    close(slow);
  }

  SECTION("the body limit before the body, the body deadline, the idle deadline") {
    const auto t0 = Clock::now();
    const Response big = request_once(
        kLocal, api.port,
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" + kAuth + "Content-Length: 10000000\r\n\r\n", 2s);
    CHECK(big.status == 413);
    CHECK_THAT(big.body, Catch::Contains("api.max_body_bytes"));
    CHECK(Clock::now() - t0 < 500ms);  // answered from the header, not after a body or a deadline

    const int partial =
        open_socket("127.0.0.12", api.port,
                    "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" + kAuth +
                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\": \"n");
    const double body_closed = seconds_until_closed(partial, 3s);
    close(partial);
    CHECK(body_closed > 0.6);
    CHECK(body_closed < 1.8);

    const int idle = open_socket("127.0.0.13", api.port, get_request("/api/v1/queues"));
    char buf[1];
    REQUIRE(recv(idle, buf, 1, 0) == 1);  // the answer starts; then nothing more is asked
    const double idle_closed = seconds_until_closed(idle, 3s);
    close(idle);
    CHECK(idle_closed > 0.5);
    CHECK(idle_closed < 1.7);
    CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 0);
  }

  SECTION("rates per client address and per token, answered 429 with Retry-After; probes are not limited") {
    Client c(kLocal, api.port, "127.0.0.9");
    int ok = 0;
    Response limited;
    for (int i = 0; i < 30; ++i) {
      const Response r = c.send(get_request("/api/v1/queues"));
      if (r.status == 200) ++ok;
      if (r.status == 429) limited = r;
    }
    CHECK(ok >= 20);
    CHECK(ok <= 26);  // the burst, and what 5/s adds meanwhile (30 unlimited)
    CHECK(limited.status == 429);
    CHECK_THAT(limited.body, Catch::Contains("api.rate_limit.per_client"));
    REQUIRE(limited.headers.count("retry-after") == 1);
    CHECK(std::stoi(limited.headers["retry-after"]) >= 1);
    CHECK(get_from("127.0.0.9", "/healthz").status == 200);
    CHECK(get_from("127.0.0.9", "/readyz").status == 200);

    // One token from four addresses (none over its own burst): limited by the token.
    int answered = 0, token_limited = 0;
    for (int i = 0; i < 40; ++i) {
      const Response r =
          request_once(kLocal, api.port,
                       post_request("/api/v1/jobs/00000000-0000-0000-0000-000000000000/cancel", "", kAuth),
                       2s, "127.0.0." + std::to_string(20 + i % 4));
      if (r.status == 404) ++answered;
      if (r.status == 429) {
        ++token_limited;
        CHECK_THAT(r.body, Catch::Contains("api.rate_limit.per_token"));
        CHECK_THAT(r.body, !Catch::Contains(kToken));
      }
    }
    CHECK(answered >= 30);
    CHECK(answered <= 36);  // 40 unlimited
    CHECK(token_limited == 40 - answered);
  }
  CHECK(api.host->running());
}

TEST_CASE(
    "api: a bounded fuzz of the HTTP layer and of every write route's JSON gets clear 4xx answers, "
    "stores nothing, and the host and its jobs run on",
    "[api][fuzz]") {
  TestDb db;
  // No rate limits here, so that every request reaches the parsers.
  HardenedHost api(db,
                   "  rate_limit: { per_client: { requests_per_s: 0 }, per_token: { requests_per_s: 0 } }\n");
  const std::string later =
      db.scalar("SELECT jobhost.enqueue('noop', '{}', run_at => now() + interval '1 hour')::text");
  const std::string dead = db.enqueue("noop", R"({"permanent": true})");
  REQUIRE(eventually([&] { return db.status(dead) == "failed"; }, 20s));
  const int kJobs = 300;
  db.enqueue_many("noop", R"({"sleep_ms": 2})", kJobs);

  // The HTTP layer: 600 malformed requests of every kind garbage_request makes.
  const uint64_t seed = 20261124;
  std::map<int, int> statuses;
  for (uint64_t i = 0; i < 600; ++i) {
    const std::string raw = garbage_request(seed + i, kToken);
    const Response r = request_once(kLocal, api.port, raw, 2s, kLocal, true);
    ++statuses[r.status];
    INFO("garbage request " << i << " (seed " << seed + i << ") answered " << r.status << ": " << r.body);
    // A read with an odd but harmless query (SQL in a queue name) is answered as any other.
    if (raw.starts_with("GET ") && r.status == 200) continue;
    CHECK(((r.status >= 400 && r.status < 500) || r.status == 505));
    CHECK(json::parse(r.body, nullptr, false).contains("error"));
  }

  // Every write route's body: broken in each way, each answered 4xx with an error.
  const std::vector<std::pair<std::string, std::string>> bodies = {
      {"truncated", R"({"type": "noop", "payload": {"a": )"},
      {"malformed", R"({type: noop})"},
      {"not an object", R"(["noop"])"},
      {"a bare string", R"("noop")"},
      {"trailing garbage", R"({"type": "noop"} {"type": "noop"})"},
      {"nested 100 deep", R"({"type": "noop", "payload": {"a": )" + deep(100) + "}}"},
      {"nested 300,000 deep", deep(300000)},
      {"invalid UTF-8 in a value", "{\"type\": \"no\xc3\x28op\"}"},
      {"invalid UTF-8 in a key", "{\"ty\xffpe\": \"noop\"}"},
      {"a lone surrogate", R"({"type": "noop\ud800"})"},
      {"a NUL byte", std::string("{\"type\": \"noop\0\"}", 17)},
      {"a duplicate key", R"({"type": "noop", "type": "noop"})"},
      {"a duplicate key inside the payload", R"({"type": "noop", "payload": {"a": 1, "a": 1}})"},
      {"a number out of range", R"({"type": "noop", "priority": 1e400})"},
      {"an unsigned number past int64", R"({"type": "noop", "priority": 18446744073709551615})"},
      {"oversized", R"({"type": "noop", "payload": {"x": ")" + std::string(1500000, 'a') + "\"}}"},
  };
  const std::vector<std::string> routes = {"/api/v1/jobs", "/api/v1/jobs/" + later + "/cancel",
                                           "/api/v1/dlq/" + dead + "/replay",
                                           "/api/v1/dlq/replay?queue=noop"};
  Client c(kLocal, api.port, kLocal, 10s);
  for (const auto& route : routes) {
    for (const auto& [what, body] : bodies) {
      const Response r = c.send(post_request(route, body, kAuth));
      INFO("POST " << route << " with " << what << ": " << r.status << " " << r.body);
      CHECK(r.status >= 400);
      CHECK(r.status < 500);
      CHECK(json::parse(r.body, nullptr, false).value("error", "").size() > 0);
    }
  }

  // Nothing was stored or changed, the host runs, and a good request still works.
  CHECK(api.host->running());
  CHECK(db.status(later) == "queued");
  CHECK(db.status(dead) == "failed");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + dead + "'") == 1);
  REQUIRE(eventually(
      [&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed'") == kJobs; },
      60s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == kJobs + 2);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs") ==
        kJobs + 1);  // each once, and the dead one's attempt
  const Response good = c.send(post_request("/api/v1/jobs", R"({"type": "noop"})", kAuth));
  CHECK(good.status == 201);
}
