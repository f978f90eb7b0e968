// webhook.dispatch end to end: a real host delivers to a real HTTP server on
// loopback (cpp-httplib), which checks the signature as a receiver would.
//
// Each job's payload carries the receiver's script: data.answers lists the
// status to give on the 1st, 2nd, ... request with that event id (200 after
// the list), data.retry_after a Retry-After header for non-2xx answers, and
// data.first_sleep_ms a delay before answering the first request.
#include <openssl/crypto.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "proxy_trap.hpp"
#include "settings_check.hpp"
#include "webhook_http.hpp"
#include <jobhost/testing.hpp>

using namespace jobhost::test;
using nlohmann::json;

namespace {

const std::string kSecret = "s3cret-0123456789abcdef";

// A webhook receiver on 127.0.0.1 that verifies each request's signature.
struct Receiver {
  struct Seen {
    std::string body;
    bool signature_ok = false;
    httplib::Headers headers;
  };
  std::mutex mu;
  std::vector<Seen> seen;
  std::map<std::string, int> per_event;
  httplib::Server server;
  std::thread thread;
  int port = 0;

  explicit Receiver(const std::string& address = "127.0.0.1") {
    server.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      Seen s{req.body, false, req.headers};
      const std::string ts = req.get_header_value("X-Jobhost-Timestamp");
      const std::string want = webhook::signature_header(kSecret, ts, req.body);
      const std::string got = req.get_header_value("X-Jobhost-Signature");
      s.signature_ok = got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), got.size()) == 0;
      int nth = 0;
      {
        std::lock_guard lock(mu);
        seen.push_back(s);
        nth = ++per_event[req.get_header_value("X-Jobhost-Event-Id")];
      }
      const json data = json::parse(req.body)["data"];
      if (nth == 1 && data.contains("first_sleep_ms")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(data["first_sleep_ms"].get<int>()));
      }
      const json answers = data.value("answers", json::array());
      res.status = nth <= static_cast<int>(answers.size()) ? answers[nth - 1].get<int>() : 200;
      if (res.status >= 300) {
        if (data.contains("retry_after")) res.set_header("Retry-After", data["retry_after"].get<std::string>());
        res.set_content("nope", "text/plain");
      }
    });
    port = server.bind_to_any_port(address);
    thread = std::thread([this] { server.listen_after_bind(); });
  }
  ~Receiver() {
    server.stop();
    thread.join();
  }
  size_t count() {
    std::lock_guard lock(mu);
    return seen.size();
  }
};

// allow_cidrs as YAML; empty for none.
std::string config(TestDb& db, const std::string& allow_cidrs = R"(["127.0.0.0/8"])") {
  HostOptions o;
  o.extra_yaml = "  - name: webhook_dispatch\n"
                 "    library: " + plugin_dir() + "/libwebhook_dispatch.so\n"
                 "    job_types: [webhook.dispatch]\n"
                 "    concurrency: { min: 4, max: 4 }\n"
                 "    retry: { max_attempts: 3, base_ms: 50, max_ms: 200 }\n"
                 "    timeout_ms: 10000\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      db_pool_size: 2\n"
                 "      timeout_ms: 700\n"
                 "      max_retry_after_ms: 2500\n" +
                 (allow_cidrs.empty() ? "" : "      allow_cidrs: " + allow_cidrs + "\n");
  return write_config(db, o, "webhook");
}

void seed(TestDb& db, int port, const std::string& host = "127.0.0.1") {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES ('e1', 't1', 'http://" + host + ":" +
            std::to_string(port) + "/hook', '" + kSecret + "') RETURNING 1");
}

std::string dispatch(TestDb& db, const std::string& event_id, const json& data = json::object(),
                     const std::string& tenant = "t1", const std::string& endpoint = "e1") {
  const json payload = {{"tenant_id", tenant}, {"endpoint_id", endpoint}, {"event", "import.completed"},
                        {"event_id", event_id}, {"data", data}};
  return db.enqueue("webhook.dispatch", payload.dump());
}

// status_code (or "-" when none) of each recorded attempt of a job, in order.
std::string deliveries(TestDb& db, const std::string& job) {
  return db.scalar("SELECT string_agg(coalesce(status_code::text, '-'), ',' ORDER BY attempt) "
                   "FROM app.webhook_deliveries WHERE job_id = '" + job + "'");
}

}  // namespace

TEST_CASE("a webhook is POSTed signed with event id and timestamp headers, and a 2xx completes it", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  const std::string id = dispatch(db, "ev-1", {{"n", 3}});
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  REQUIRE(r.count() == 1);
  const auto& s = r.seen[0];
  CHECK(s.signature_ok);
  const auto body = json::parse(s.body);
  CHECK(body["event"] == "import.completed");
  CHECK(body["event_id"] == "ev-1");
  CHECK(body["data"]["n"] == 3);
  CHECK(body["created_at"].is_string());
  CHECK(s.headers.find("X-Jobhost-Event-Id")->second == "ev-1");
  CHECK(s.headers.find("X-Jobhost-Event")->second == "import.completed");
  CHECK(s.headers.find("Content-Type")->second == "application/json");
  CHECK_THAT(s.headers.find("User-Agent")->second, Catch::StartsWith("jobhost-webhook/1."));
  const long ts = std::stol(s.headers.find("X-Jobhost-Timestamp")->second);
  CHECK(std::abs(ts - static_cast<long>(std::time(nullptr))) < 30);
  CHECK(deliveries(db, id) == "200");
  CHECK(db.scalar("SELECT tenant_id || ' ' || endpoint_id || ' ' || event_id || ' ' || (error IS NULL) "
                  "FROM app.webhook_deliveries") == "t1 e1 ev-1 true");
}

TEST_CASE("a 4xx answer fails the webhook for good, except 408 and 429 which retry", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  std::map<int, std::string> permanent;
  for (int status : {400, 404, 410, 301}) {
    permanent[status] = dispatch(db, "ev-" + std::to_string(status), {{"answers", json::array({status})}});
  }
  const std::string busy = dispatch(db, "ev-busy", {{"answers", json::array({429, 408})}});
  for (const auto& [status, id] : permanent) {
    INFO(status);
    REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
    CHECK(db.field(id, "attempt_count") == "1");
    CHECK_THAT(db.field(id, "last_error_message"),
               Catch::Contains("answered HTTP " + std::to_string(status) + ": nope"));
    CHECK(deliveries(db, id) == std::to_string(status));
  }
  CHECK_THAT(db.field(permanent[301], "last_error_message"), Catch::Contains("redirects are not followed"));
  REQUIRE(eventually([&] { return db.status(busy) == "completed"; }, 20s));
  CHECK(db.field(busy, "attempt_count") == "3");
  CHECK(deliveries(db, busy) == "429,408,200");
}

TEST_CASE("a 5xx is retried and succeeds on the next attempt, and Retry-After sets the delay, capped", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  const std::string plain = dispatch(db, "ev-500", {{"answers", json::array({500})}});
  const std::string later = dispatch(db, "ev-503", {{"answers", json::array({503})}, {"retry_after", "2"}});
  const std::string capped = dispatch(db, "ev-429", {{"answers", json::array({429})}, {"retry_after", "3600"}});
  for (const auto& id : {plain, later, capped}) {
    REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
    CHECK(db.field(id, "attempt_count") == "2");
  }
  CHECK(deliveries(db, plain) == "500,200");
  CHECK(db.retry_gap_ms(plain, 1) < 1500);
  // base_ms is 50 and max_ms 200: only Retry-After explains gaps of seconds.
  CHECK(db.retry_gap_ms(later, 1) >= 1900);
  CHECK(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + later + "' AND attempt_number = 1")
            .find("Retry-After: 2") != std::string::npos);
  // An hour asked, settings.max_retry_after_ms (2500) granted.
  CHECK(db.retry_gap_ms(capped, 1) >= 2400);
  CHECK(db.retry_gap_ms(capped, 1) < 6000);
}

TEST_CASE("a slow receiver times out, a closed port refuses and an unknown name does not resolve: all retried",
          "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  // Past the plugin's timeout_ms of 700 on the first request only.
  const std::string slow = dispatch(db, "ev-slow", {{"first_sleep_ms", 1500}});
  REQUIRE(eventually([&] { return db.status(slow) == "completed"; }, 20s));
  CHECK(db.field(slow, "attempt_count") == "2");
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + slow + "' AND attempt_number = 1"),
             Catch::Contains("Timeout"));
  CHECK(deliveries(db, slow) == "-,200");
  (void)r;

  // Nothing listens on port 1; no name under .invalid resolves (RFC 6761).
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('closed', 't1', 'http://127.0.0.1:1/hook', '" + kSecret + "'), "
            "('nxdomain', 't1', 'http://no-such-host.invalid/hook', '" + kSecret + "') RETURNING 1");
  const std::string refused = dispatch(db, "ev-refused", json::object(), "t1", "closed");
  const std::string unresolved = dispatch(db, "ev-dns", json::object(), "t1", "nxdomain");
  REQUIRE(eventually([&] { return db.status(refused) == "failed" && db.status(unresolved) == "failed"; }, 30s));
  CHECK(db.field(refused, "attempt_count") == "3");
  CHECK_THAT(db.field(refused, "last_error_message"), Catch::Contains("Couldn't connect"));
  CHECK(deliveries(db, refused) == "-,-,-");
  CHECK(db.field(unresolved, "attempt_count") == "3");
  CHECK_THAT(db.field(unresolved, "last_error_message"), Catch::Contains("cannot resolve no-such-host.invalid"));
}

TEST_CASE("a loopback target is refused unless allow-listed, naming the address", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('mapped', 't1', 'http://[::ffff:127.0.0.1]:" + std::to_string(r.port) + "/hook', '" + kSecret + "'), "
            "('meta', 't1', 'http://169.254.169.254/latest/meta-data/', '" + kSecret + "') RETURNING 1");
  auto host = start_host(config(db, ""), "webhook");
  const std::string id = dispatch(db, "ev-1");
  const std::string mapped = dispatch(db, "ev-2", json::object(), "t1", "mapped");
  const std::string meta = dispatch(db, "ev-3", json::object(), "t1", "meta");
  for (const auto& j : {id, mapped, meta}) {
    REQUIRE(eventually([&] { return db.status(j) == "failed"; }, 20s));
    CHECK(db.field(j, "attempt_count") == "1");
  }
  CHECK_THAT(db.field(id, "last_error_message"),
             Catch::Contains("refused to connect to 127.0.0.1 (127.0.0.1): a loopback address"));
  CHECK_THAT(db.field(mapped, "last_error_message"), Catch::Contains("(::ffff:127.0.0.1): a loopback address"));
  CHECK_THAT(db.field(meta, "last_error_message"), Catch::Contains("(169.254.169.254): a link-local address"));
  CHECK_THAT(db.scalar("SELECT error FROM app.webhook_deliveries WHERE job_id = '" + id + "'"),
             Catch::Contains("refused to connect"));
  CHECK(r.count() == 0);
}

TEST_CASE("bad webhook payloads, another tenant's endpoint and an inactive one are not delivered", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret, active) VALUES "
            "('off', 't1', 'http://127.0.0.1:" + std::to_string(r.port) + "/hook', '" + kSecret + "', false) "
            "RETURNING 1");
  auto host = start_host(config(db), "webhook");
  const std::string missing = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "event": "x", "event_id": "1", "data": {}})");
  const std::string typed = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "endpoint_id": 7, "event": "x", "event_id": "1", "data": {}})");
  const std::string nodata = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "endpoint_id": "e1", "event": "x", "event_id": "1"})");
  const std::string injected = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "endpoint_id": "e1", "event": "x\r\nX-Evil: 1", "event_id": "1", "data": {}})");
  const std::string other = dispatch(db, "ev-1", json::object(), "t2", "e1");
  const std::string inactive = dispatch(db, "ev-2", json::object(), "t1", "off");
  REQUIRE(eventually([&] {
    return db.status(missing) == "failed" && db.status(typed) == "failed" && db.status(nodata) == "failed" &&
           db.status(injected) == "failed" && db.status(other) == "failed" && db.status(inactive) == "completed";
  }, 20s));
  CHECK_THAT(db.field(missing, "last_error_message"), Catch::Contains("payload.endpoint_id: is required"));
  CHECK_THAT(db.field(typed, "last_error_message"), Catch::Contains("payload.endpoint_id: must be a string"));
  CHECK_THAT(db.field(nodata, "last_error_message"), Catch::Contains("payload.data: is required"));
  CHECK_THAT(db.field(injected, "last_error_message"), Catch::Contains("payload.event: must not contain control"));
  CHECK_THAT(db.field(other, "last_error_message"), Catch::Contains("no webhook endpoint 'e1' for tenant 't2'"));
  CHECK(db.field(other, "attempt_count") == "1");
  CHECK(r.count() == 0);
  CHECK(db.count("SELECT count(*) FROM app.webhook_deliveries") == 0);
}

TEST_CASE("an IPv6 literal target is delivered when allow-listed", "[webhook]") {
  TestDb db;
  Receiver r("::1");
  if (r.port <= 0) {
    WARN("no IPv6 loopback on this machine: not tested");
    return;
  }
  seed(db, r.port, "[::1]");
  auto host = start_host(config(db), "webhook");
  // 127.0.0.0/8 is allow-listed, ::1 is not...
  const std::string refused = dispatch(db, "ev-1");
  REQUIRE(eventually([&] { return db.status(refused) == "failed"; }, 20s));
  CHECK_THAT(db.field(refused, "last_error_message"), Catch::Contains("(::1): a loopback address"));
  host.reset();
  // ...and once it is, delivery works (libcurl cannot pin an IPv6 literal, and needs not).
  host = start_host(config(db, R"(["::1/128"])"), "webhook");
  const std::string id = dispatch(db, "ev-2");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(r.count() == 1);
  CHECK(r.seen[0].signature_ok);
}

TEST_CASE("a webhook ignores proxy variables: delivered directly, and the address guard still holds", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('private', 't1', 'http://10.1.2.3:8080/hook', '" + kSecret + "') RETURNING 1");
  // A proxy would connect to an address nobody checked.
  jobhost_plugins::testing::ProxyTrap proxy("proxied");
  std::unique_ptr<Process> host;
  {
    const jobhost_plugins::testing::ProxyEnvironment env(proxy.url());
    host = start_host(config(db), "webhook");
  }
  const std::string id = dispatch(db, "ev-1");
  const std::string refused = dispatch(db, "ev-2", json::object(), "t1", "private");
  REQUIRE(eventually([&] { return db.status(id) == "completed" && db.status(refused) == "failed"; }, 20s));
  INFO(host->log());
  CHECK(proxy.connections() == 0);
  CHECK(r.count() == 1);
  CHECK(db.field(refused, "attempt_count") == "1");
  CHECK_THAT(db.field(refused, "last_error_message"),
             Catch::Contains("refused to connect to 10.1.2.3 (10.1.2.3): a private address"));
}

TEST_CASE("a webhook answer's body is read only as far as it is quoted: an endless 2xx body still completes",
          "[webhook]") {
  TestDb db;
  httplib::Server server;
  std::atomic<long long> sent{0};
  server.Post("/hook", [&](const httplib::Request&, httplib::Response& res) {
    // Chunks without end, until the client hangs up.
    res.set_chunked_content_provider("text/plain", [&](size_t, httplib::DataSink& sink) {
      const std::string chunk(4096, 'x');
      sent += static_cast<long long>(chunk.size());
      return sink.write(chunk.data(), chunk.size());
    });
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { server.listen_after_bind(); });
  seed(db, port);
  auto host = start_host(config(db), "webhook");
  const std::string id = dispatch(db, "ev-endless");
  REQUIRE(eventually([&] { return db.status(id) == "completed" || db.status(id) == "failed"; }, 20s));
  server.stop();
  serving.join();
  CHECK(db.status(id) == "completed");
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK(deliveries(db, id) == "200");
}

TEST_CASE("a misspelt webhook_dispatch setting is refused by --check-config, naming it", "[webhook]") {
  TestDb db;
  check_settings_refused(with_setting(config(db, ""), "allowed_cidrs: [\"10.0.0.0/8\"]"),
                         "settings.allowed_cidrs: unknown key (did you mean allow_cidrs?)");
  check_settings_refused(with_setting(config(db), "timeout: 5000"),
                         "settings.timeout: unknown key (did you mean timeout_ms?)");
}

// The plugin's handle() run in-process through the SDK's harness
// (<jobhost/testing.hpp>): no jobhost, no Redis; the plugin's own database and
// the receiver are real. This binary compiles webhook_dispatch.cpp itself.
extern "C" const jobhost_plugin* jobhost_plugin_entry(void);

namespace {

json harness_settings(TestDb& db) {
  return {{"database_url", db.url()}, {"db_pool_size", 1}, {"timeout_ms", 700},
          {"max_retry_after_ms", 2500}, {"allow_cidrs", {"127.0.0.0/8"}}};
}

jobhost::sdk::testing::TestJob harness_job(const std::string& event_id, const json& data = json::object()) {
  jobhost::sdk::testing::TestJob job;
  job.type = "webhook.dispatch";
  job.payload = {{"tenant_id", "t1"}, {"endpoint_id", "e1"}, {"event", "import.completed"},
                 {"event_id", event_id}, {"data", data}};
  return job;
}

}  // namespace

TEST_CASE("webhook handle() in-process through the SDK harness: delivered, retried with the answer's delay, and never a secret in its logs",
          "[webhook][harness]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  jobhost::sdk::testing::Harness h(jobhost_plugin_entry(), harness_settings(db));

  const auto ok = h.run(harness_job("ev-h1", {{"n", 1}}));
  CHECK(ok.ok());
  CHECK(ok.error.empty());
  REQUIRE(r.count() == 1);
  CHECK(r.seen[0].signature_ok);
  CHECK(ok.logged("ev-h1"));
  CHECK(ok.enqueued.empty());

  const auto busy = h.run(harness_job("ev-h2", {{"answers", json::array({429})}, {"retry_after", "2"}}));
  CHECK(busy.retried());
  CHECK_THAT(busy.error, Catch::Contains("429"));
  REQUIRE(busy.retry_after_ms);
  CHECK(*busy.retry_after_ms == 2000);

  for (const auto* run : {&ok, &busy}) {
    for (const auto& line : run->logs) CHECK_THAT(line.message, !Catch::Contains(kSecret));
  }
  CHECK(db.count("SELECT count(*) FROM app.webhook_deliveries WHERE event_id IN ('ev-h1', 'ev-h2')") == 2);

  CHECK_THAT(h.validate("webhook.dispatch", {{"tenant_id", "t1"}}), Catch::Contains("payload."));
  json misspelt = harness_settings(db);
  misspelt["timeout_msec"] = 5;
  CHECK_THROWS_WITH(jobhost::sdk::testing::Harness(jobhost_plugin_entry(), misspelt),
                    Catch::Contains("settings.timeout_msec: unknown key"));
}
