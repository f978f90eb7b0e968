// email.send end to end: a real host sends through libcurl to real SMTP
// servers on loopback (smtp_sink.hpp), which keep what they receive; the tests
// parse the received messages.
#include <regex>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "smtp_sink.hpp"

using namespace jobhost::test;

namespace {

std::string config(TestDb& db, int primary_port, int fallback_port, int breaker_failures = 5, long open_ms = 30000,
                   long timeout_ms = 2000) {
  HostOptions o;
  o.extra_yaml = "  - name: email_send\n"
                 "    library: " + plugin_dir() + "/libemail_send.so\n"
                 "    job_types: [email.send]\n"
                 "    concurrency: { min: 1, max: 1 }\n"
                 "    retry: { max_attempts: 3, base_ms: 100, max_ms: 300 }\n"
                 "    timeout_ms: 20000\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      providers:\n"
                 "        - { name: internal, url: \"smtp://127.0.0.1:" + std::to_string(primary_port) +
                 "\", timeout_ms: " + std::to_string(timeout_ms) + " }\n"
                 "        - { name: esp, url: \"smtp://127.0.0.1:" + std::to_string(fallback_port) +
                 "\", timeout_ms: " + std::to_string(timeout_ms) + " }\n"
                 "      circuit_breaker: { failures: " + std::to_string(breaker_failures) + ", open_ms: " +
                 std::to_string(open_ms) + " }\n";
  return write_config(db, o, "email");
}

void seed(TestDb& db) {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) VALUES "
            "('tpl', 't1', 'Welcome', 'news@t1.example', 'Hello {{name}}', '<p>Hi {{ name }}!</p>', 'Hi {{name}}!') "
            "RETURNING 1");
  db.scalar("INSERT INTO app.suppressions (tenant_id, email, reason) VALUES ('t1', 'gone@example.com', 'hard bounce') RETURNING 1");
}

std::string send(TestDb& db, const std::string& to = "ann@example.com", const std::string& name = "<b>Ann & Co</b>",
                 const std::string& tenant = "t1") {
  return db.enqueue("email.send", R"({"recipient": ")" + to + R"(", "template_id": "tpl", "tenant_id": ")" + tenant +
                                      R"(", "variables": {"name": ")" + name + R"("}})");
}

// A port nobody listens on: a sink's, after it stopped.
int closed_port() {
  smtp::Sink s;
  const int port = s.port();
  s.stop();
  return port;
}

std::string header(const std::string& msg, const std::string& name) {
  std::smatch m;
  if (std::regex_search(msg, m, std::regex("(^|\r\n)" + name + ": ([^\r]*)\r\n"))) return m[2];
  return "";
}

std::string unbase64(std::string in) {
  static const std::string table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int bits = 0, value = 0;
  for (const char c : in) {
    const auto i = table.find(c);
    if (i == std::string::npos) continue;
    value = (value << 6) | static_cast<int>(i);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((value >> bits) & 0xff);
    }
  }
  return out;
}

// The decoded body of the MIME part with this content type.
std::string part(const std::string& msg, const std::string& type) {
  const auto at = msg.find("Content-Type: " + type);
  REQUIRE(at != std::string::npos);
  const auto body = msg.find("\r\n\r\n", at) + 4;
  const auto end = msg.find("\r\n--", body);
  return unbase64(msg.substr(body, end - body));
}

}  // namespace

TEST_CASE("email.send renders the template, sends multipart/alternative over SMTP and records it", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, primary.port(), fallback.port()), "email");
  const std::string id = send(db);
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  REQUIRE(primary.messages().size() == 1);
  CHECK(fallback.messages().empty());
  const smtp::Message m = primary.messages()[0];
  CHECK(m.from == "news@t1.example");
  CHECK(m.to == std::vector<std::string>{"ann@example.com"});
  CHECK(header(m.data, "Subject") == "Hello <b>Ann & Co</b>");
  CHECK(header(m.data, "To") == "ann@example.com");
  CHECK(header(m.data, "Message-ID") == "<" + id + "@jobhost>");
  CHECK_THAT(header(m.data, "Content-Type"), Catch::StartsWith("multipart/alternative; boundary="));
  CHECK(part(m.data, "text/plain") == "Hi <b>Ann & Co</b>!");
  CHECK(part(m.data, "text/html") == "<p>Hi &lt;b&gt;Ann &amp; Co&lt;/b&gt;!</p>");
  CHECK(db.scalar("SELECT status || ' ' || provider || ' ' || message_id FROM app.email_messages WHERE job_id = '" + id + "'") ==
        "sent internal <" + id + "@jobhost>");
  CHECK(db.scalar("SELECT string_agg(event, ',') FROM app.email_events") == "sent");

  // Run the same job again (as a replay would): no second message.
  db.scalar("UPDATE jobhost.jobs SET status = 'queued', attempt_count = 0 WHERE id = '" + id + "' RETURNING 1");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") == 2; }, 20s));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(primary.messages().size() == 1);
  CHECK_THAT(host->log(), Catch::Contains("was already sent by attempt 1; not sending again"));
}

TEST_CASE("email.send skips a suppressed recipient and records why", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, primary.port(), fallback.port()), "email");
  const std::string id = send(db, "Gone@Example.com");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(primary.messages().empty());
  CHECK(db.scalar("SELECT status || ': ' || error FROM app.email_messages") == "suppressed: suppressed: hard bounce");
  CHECK(db.scalar("SELECT event || ' ' || (detail->>'reason') FROM app.email_events") == "suppressed hard bounce");
}

TEST_CASE("email.send fails over when the primary refuses or is down", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.refuse_with(554);
  auto host = start_host(config(db, primary.port(), fallback.port()), "email");
  const std::string refused = send(db, "a@example.com");
  REQUIRE(eventually([&] { return db.status(refused) == "completed"; }, 20s));
  CHECK(primary.messages().empty());
  REQUIRE(fallback.messages().size() == 1);
  CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + refused + "'") == "esp");
  CHECK_THAT(host->log(), Catch::Contains("relay internal failed") && Catch::Contains("SMTP 554"));
  host.reset();

  auto host2 = start_host(config(db, closed_port(), fallback.port()), "email");
  const std::string down = send(db, "b@example.com");
  REQUIRE(eventually([&] { return db.status(down) == "completed"; }, 20s));
  CHECK(fallback.messages().size() == 2);
  CHECK_THAT(host2->log(), Catch::Contains("Couldn't connect"));
}

TEST_CASE("email.send opens a circuit breaker after repeated failures and tries again after open_ms", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.refuse_with(451);
  auto host = start_host(config(db, primary.port(), fallback.port(), 2, 1500), "email");
  for (int i = 0; i < 4; ++i) {
    const std::string id = send(db, "r" + std::to_string(i) + "@example.com");
    REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  }
  // Two failures opened the circuit: jobs 3 and 4 went straight to the fallback.
  CHECK(primary.connections() == 2);
  CHECK(fallback.messages().size() == 4);
  std::this_thread::sleep_for(1600ms);
  primary.refuse_with(0);
  const std::string after = send(db, "later@example.com");
  REQUIRE(eventually([&] { return db.status(after) == "completed"; }, 20s));
  CHECK(primary.connections() == 3);  // the half-open trial
  CHECK(primary.messages().size() == 1);
}

TEST_CASE("email.send retries a slow relay and relays that are down, then sends once one answers", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink slow;
  slow.delay_replies_ms(1500);  // past the providers' timeout_ms of 700
  const int down = closed_port();
  auto host = start_host(config(db, slow.port(), down, 5, 30000, 700), "email");
  const std::string id = send(db);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") >= 1; }, 20s));
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' ORDER BY id LIMIT 1"),
             Catch::Contains("internal: Timeout") && Catch::Contains("esp: Couldn't connect"));
  CHECK(db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + id + "'") != "sent");
  // The fallback comes up on its port: the next attempt sends.
  smtp::Sink fallback(static_cast<uint16_t>(down));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(fallback.messages().size() == 1);
  CHECK(slow.messages().empty());
}

TEST_CASE("email.send refuses bad payloads and unknown templates naming the field, and does not repeat an interrupted send",
          "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, primary.port(), fallback.port()), "email");
  const std::string no_rcpt = db.enqueue("email.send", R"({"template_id": "tpl", "tenant_id": "t1", "variables": {}})");
  const std::string bad_rcpt = send(db, "not-an-address");
  const std::string bad_vars = db.enqueue("email.send",
      R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": [1]})");
  const std::string missing_var = db.enqueue("email.send",
      R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": {}})");
  const std::string other_tenant = send(db, "a@example.com", "X", "t2");
  // An earlier attempt died mid-send: its row still says 'sending'.
  const std::string interrupted = db.scalar("SELECT jobhost.enqueue('email.send', '{\"recipient\": \"i@example.com\", "
                                            "\"template_id\": \"tpl\", \"tenant_id\": \"t1\", \"variables\": {\"name\": \"I\"}}', "
                                            "run_at => now() + interval '1 hour')::text");
  db.scalar("INSERT INTO app.email_messages (tenant_id, job_id, template_id, recipient, status, provider) VALUES "
            "('t1', '" + interrupted + "', 'tpl', 'i@example.com', 'sending', 'internal') RETURNING 1");
  db.scalar("UPDATE jobhost.jobs SET run_at = now() WHERE id = '" + interrupted + "' RETURNING 1");
  REQUIRE(eventually([&] {
    for (const auto& j : {no_rcpt, bad_rcpt, bad_vars, missing_var, other_tenant, interrupted}) {
      if (db.status(j) != "failed") return false;
    }
    return true;
  }, 20s));
  CHECK_THAT(db.field(no_rcpt, "last_error_message"), Catch::Contains("payload.recipient: is required"));
  CHECK_THAT(db.field(bad_rcpt, "last_error_message"), Catch::Contains("payload.recipient: 'not-an-address' has no @"));
  CHECK_THAT(db.field(bad_vars, "last_error_message"), Catch::Contains("payload.variables: must be an object"));
  CHECK_THAT(db.field(missing_var, "last_error_message"), Catch::Contains("payload.variables.name: missing"));
  CHECK_THAT(db.field(other_tenant, "last_error_message"), Catch::Contains("payload.template_id: no template 'tpl' for tenant 't2'"));
  CHECK_THAT(db.field(interrupted, "last_error_message"), Catch::Contains("delivery state unknown") &&
                                                           Catch::Contains("<" + interrupted + "@jobhost>"));
  CHECK(primary.messages().empty());
  CHECK(fallback.messages().empty());
}
