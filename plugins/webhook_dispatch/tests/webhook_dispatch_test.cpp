// webhook.dispatch end to end: a real host delivers to a real HTTP server on
// loopback (cpp-httplib), which checks the signature as a receiver would.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "harness.hpp"

using namespace jobhost::test;

namespace {

const std::string kSecret = "s3cret-0123456789abcdef";

std::string hmac_hex(const std::string& key, const std::string& msg) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(msg.data()),
       msg.size(), mac, &len);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += digits[mac[i] >> 4];
    out += digits[mac[i] & 15];
  }
  return out;
}

// A webhook receiver on 127.0.0.1: verifies each request's signature and
// answers with what `respond` says.
struct Receiver {
  struct Seen {
    std::string body;
    bool signature_ok = false;
    httplib::Headers headers;
  };
  std::function<void(int n, httplib::Response&)> respond = [](int, httplib::Response& res) { res.status = 200; };
  std::mutex mu;
  std::vector<Seen> seen;
  httplib::Server server;
  std::thread thread;
  int port = 0;

  Receiver() {
    server.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      Seen s{req.body, false, req.headers};
      const std::string ts = req.get_header_value("X-Jobhost-Timestamp");
      const std::string want = "t=" + ts + ",v1=" + hmac_hex(kSecret, ts + "." + req.body);
      const std::string got = req.get_header_value("X-Jobhost-Signature");
      s.signature_ok = got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), got.size()) == 0;
      int n = 0;
      {
        std::lock_guard lock(mu);
        seen.push_back(s);
        n = static_cast<int>(seen.size());
      }
      respond(n, res);
    });
    port = server.bind_to_any_port("127.0.0.1");
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

std::string config(TestDb& db, bool allow_loopback = true) {
  HostOptions o;
  o.extra_yaml = "  - name: webhook_dispatch\n"
                 "    library: " + plugin_dir() + "/libwebhook_dispatch.so\n"
                 "    job_types: [webhook.dispatch]\n"
                 "    concurrency: { min: 1, max: 2 }\n"
                 "    retry: { max_attempts: 3, base_ms: 50, max_ms: 200 }\n"
                 "    timeout_ms: 10000\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      timeout_ms: 700\n" +
                 (allow_loopback ? "      allow_cidrs: [\"127.0.0.0/8\"]\n" : "");
  return write_config(db, o, "webhook");
}

void seed(TestDb& db, int port, const std::string& host = "127.0.0.1") {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES ('e1', 't1', 'http://" + host + ":" +
            std::to_string(port) + "/hook', '" + kSecret + "') RETURNING 1");
}

std::string dispatch(TestDb& db, const std::string& tenant = "t1", const std::string& endpoint = "e1") {
  return db.enqueue("webhook.dispatch", R"({"tenant_id": ")" + tenant + R"(", "endpoint_id": ")" + endpoint +
                                            R"(", "event": "import.completed", "event_id": "ev-1", "data": {"n": 3}})");
}

}  // namespace

TEST_CASE("a webhook is POSTed signed, with event id and timestamp headers, and 2xx completes it", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  const std::string id = dispatch(db);
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  REQUIRE(r.count() == 1);
  const auto& s = r.seen[0];
  CHECK(s.signature_ok);
  const auto body = nlohmann::json::parse(s.body);
  CHECK(body["event"] == "import.completed");
  CHECK(body["event_id"] == "ev-1");
  CHECK(body["data"]["n"] == 3);
  CHECK(body["created_at"].is_string());
  CHECK(s.headers.find("X-Jobhost-Event-Id")->second == "ev-1");
  CHECK(s.headers.find("Content-Type")->second == "application/json");
  const long ts = std::stol(s.headers.find("X-Jobhost-Timestamp")->second);
  CHECK(std::abs(ts - static_cast<long>(std::time(nullptr))) < 30);
}

TEST_CASE("a 4xx answer fails the webhook for good, except 408 and 429 which retry", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  r.respond = [](int n, httplib::Response& res) {
    // First job: 410. Second job: 429, then 408, then 200.
    res.status = n == 1 ? 410 : n == 2 ? 429 : n == 3 ? 408 : 200;
    res.set_content("nope", "text/plain");
  };
  auto host = start_host(config(db), "webhook");
  const std::string gone = dispatch(db);
  REQUIRE(eventually([&] { return db.status(gone) == "failed"; }, 20s));
  CHECK(db.field(gone, "attempt_count") == "1");
  CHECK_THAT(db.field(gone, "last_error_message"), Catch::Contains("answered HTTP 410: nope"));
  const std::string busy = dispatch(db);
  REQUIRE(eventually([&] { return db.status(busy) == "completed"; }, 20s));
  CHECK(db.field(busy, "attempt_count") == "3");
}

TEST_CASE("a 5xx is retried, and Retry-After sets the delay", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  r.respond = [](int n, httplib::Response& res) {
    res.status = n == 1 ? 503 : 200;
    if (n == 1) res.set_header("Retry-After", "2");
  };
  auto host = start_host(config(db), "webhook");
  const std::string id = dispatch(db);
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "2");
  // base_ms is 50: only Retry-After explains a gap of two seconds.
  CHECK(db.retry_gap_ms(id, 1) >= 1900);
  CHECK(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' AND attempt_number = 1")
            .find("Retry-After: 2") != std::string::npos);
}

TEST_CASE("a slow receiver times out and a closed port refuses: both are retried", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  std::atomic<bool> slow{true};
  r.respond = [&](int, httplib::Response& res) {
    if (slow) std::this_thread::sleep_for(1500ms);  // past the plugin's timeout_ms of 700
    res.status = 200;
  };
  auto host = start_host(config(db), "webhook");
  const std::string id = dispatch(db);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") >= 1; }, 20s));
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' ORDER BY id LIMIT 1"),
             Catch::Contains("Timeout"));
  slow = false;
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));

  // Nothing listens on the endpoint's port any more.
  db.scalar("UPDATE app.webhook_endpoints SET url = 'http://127.0.0.1:1/hook' RETURNING 1");
  const std::string refused = dispatch(db);
  REQUIRE(eventually([&] { return db.status(refused) == "failed"; }, 20s));
  CHECK(db.field(refused, "attempt_count") == "3");
  CHECK_THAT(db.field(refused, "last_error_message"), Catch::Contains("Couldn't connect"));
}

TEST_CASE("a loopback target is refused unless allow-listed, naming the address", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db, false), "webhook");
  const std::string id = dispatch(db);
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK_THAT(db.field(id, "last_error_message"),
             Catch::Contains("refused to connect to 127.0.0.1 (127.0.0.1): a loopback address"));
  CHECK(r.count() == 0);
}

TEST_CASE("bad webhook payloads, and another tenant's endpoint, fail naming the field", "[webhook]") {
  TestDb db;
  Receiver r;
  seed(db, r.port);
  auto host = start_host(config(db), "webhook");
  const std::string missing = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "event": "x", "event_id": "1", "data": {}})");
  const std::string typed = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "endpoint_id": 7, "event": "x", "event_id": "1", "data": {}})");
  const std::string nodata = db.enqueue("webhook.dispatch", R"({"tenant_id": "t1", "endpoint_id": "e1", "event": "x", "event_id": "1"})");
  const std::string other = dispatch(db, "t2", "e1");
  REQUIRE(eventually([&] {
    return db.status(missing) == "failed" && db.status(typed) == "failed" && db.status(nodata) == "failed" &&
           db.status(other) == "failed";
  }, 20s));
  CHECK_THAT(db.field(missing, "last_error_message"), Catch::Contains("payload.endpoint_id: is required"));
  CHECK_THAT(db.field(typed, "last_error_message"), Catch::Contains("payload.endpoint_id: must be a string"));
  CHECK_THAT(db.field(nodata, "last_error_message"), Catch::Contains("payload.data: is required"));
  CHECK_THAT(db.field(other, "last_error_message"), Catch::Contains("no webhook endpoint 'e1' for tenant 't2'"));
  CHECK(r.count() == 0);
}
