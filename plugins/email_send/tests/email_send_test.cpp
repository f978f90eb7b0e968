// email.send end to end: a real host sends over its pooled SMTP sessions to real SMTP
// servers on loopback (smtp_sink.hpp), which keep what they receive; the tests
// parse the received messages.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "email_send_fixture.hpp"

using namespace jobhost::test;

using namespace email_fixture;

TEST_CASE("email.send renders the template, sends multipart/alternative over SMTP and records it", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string id = send(db, "Ann@Example.com");
  REQUIRE(completed(db, id));
  REQUIRE(primary.messages().size() == 1);
  CHECK(fallback.messages().empty());
  const smtp::Message m = primary.messages()[0];
  CHECK(m.from == "news@t1.example");
  CHECK(m.to == std::vector<std::string>{"ann@example.com"});
  CHECK(header(m.data, "From") == "news@t1.example");
  CHECK(header(m.data, "To") == "ann@example.com");
  CHECK(header(m.data, "Subject") == "Hello <b>Ann & Co</b>");  // headers are text: not escaped
  CHECK(header(m.data, "Message-ID") == "<" + id + "@jobhost>");
  CHECK(header(m.data, "MIME-Version") == "1.0");
  CHECK_THAT(header(m.data, "Date"), Catch::Matches("[A-Z][a-z]{2}, \\d\\d [A-Z][a-z]{2} \\d{4} \\d\\d:\\d\\d:\\d\\d \\+0000"));
  CHECK_THAT(header(m.data, "Content-Type"), Catch::StartsWith("multipart/alternative; boundary=\""));
  CHECK(part(m.data, "text/plain") == "Hi <b>Ann & Co</b>!");
  CHECK(part(m.data, "text/html") == "<p>Hi &lt;b&gt;Ann &amp; Co&lt;/b&gt;!</p>");
  CHECK(longest_line(m.data) <= 998);
  CHECK(db.scalar("SELECT concat_ws(' ', status, provider, message_id, recipient, attempt, sent_at IS NOT NULL) "
                  "FROM app.email_messages WHERE job_id = '" + id + "'") ==
        "sent internal <" + id + "@jobhost> ann@example.com 1 t");
  CHECK(db.scalar("SELECT string_agg(event || ' ' || (detail->>'provider'), ',') FROM app.email_events") == "sent internal");

  // A non-ASCII subject is RFC 2047 encoded, folded, and decodes to the text.
  const std::string u = db.enqueue("email.send", R"({"recipient": "u@example.com", "template_id": "tpl-u", )"
                                                 R"("tenant_id": "t1", "variables": {"name": "Zoë", "n": 3}})");
  REQUIRE(completed(db, u));
  REQUIRE(primary.messages().size() == 2);
  const std::string subject = header(primary.messages()[1].data, "Subject");
  CHECK_THAT(subject, Catch::StartsWith("=?UTF-8?B?"));
  CHECK(decode_words(subject) == "Grüße, Zoë: 3 neue Nachrichten für dich");
  CHECK(part(primary.messages()[1].data, "text/plain") == "Zoë");
  CHECK(longest_line(primary.messages()[1].data) <= 76);
}

// sql/019: the outcome is written in place beside its claim (room left on
// each page), and without the event's own key to app.tenants a tenant's
// deletion still takes its messages and their events with it.
TEST_CASE("email.send leaves room for in-place outcomes, and deleting a tenant removes its messages and events", "[email]") {
  TestDb db;
  seed(db);
  CHECK(db.scalar("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'app.email_messages'::regclass") ==
        "fillfactor=70");
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string a = send(db, "ann@example.com");
  const std::string b = send(db, "bob@example.com", "Bob", "t1");
  const std::string gone = send(db, "gone@example.com");  // suppressed: an event too
  REQUIRE((completed(db, a) && completed(db, b) && completed(db, gone)));
  CHECK(db.count("SELECT count(*) FROM app.email_events WHERE tenant_id = 't1'") == 3);
  db.scalar("DELETE FROM app.tenants WHERE id = 't1' RETURNING 1");
  CHECK(db.count("SELECT count(*) FROM app.email_messages") == 0);
  CHECK(db.count("SELECT count(*) FROM app.email_events") == 0);
}

TEST_CASE("email.send never sends twice for one job id when the job runs again", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string id = send(db);
  REQUIRE(completed(db, id));
  REQUIRE(primary.messages().size() == 1);
  // Run the same job again, as a replay or a lost lease would.
  db.scalar("UPDATE jobhost.jobs SET status = 'queued', attempt_count = 0 WHERE id = '" + id + "' RETURNING 1");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") == 2; }, 20s));
  REQUIRE(completed(db, id));
  CHECK(primary.messages().size() == 1);
  CHECK(fallback.messages().empty());
  CHECK(db.count("SELECT count(*) FROM app.email_events WHERE event = 'sent'") == 1);
  CHECK_THAT(host->log(), Catch::Contains("was already sent by attempt 1") && Catch::Contains("not sending again"));
}

TEST_CASE("email.send does not repeat a send an earlier attempt left in an unknown state", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  // An earlier attempt died mid-send: its row still says 'sending'.
  const std::string id = db.scalar(
      "SELECT jobhost.enqueue('email.send', '{\"recipient\": \"i@example.com\", \"template_id\": \"tpl\", "
      "\"tenant_id\": \"t1\", \"variables\": {\"name\": \"I\"}}', run_at => now() + interval '1 hour')::text");
  db.scalar("INSERT INTO app.email_messages (tenant_id, job_id, template_id, recipient, status, provider) VALUES "
            "('t1', '" + id + "', 'tpl', 'i@example.com', 'sending', 'internal') RETURNING 1");
  db.scalar("UPDATE jobhost.jobs SET run_at = now() WHERE id = '" + id + "' RETURNING 1");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("delivery state unknown") &&
                                                  Catch::Contains("<" + id + "@jobhost>") && Catch::Contains("internal"));
  CHECK(primary.messages().empty());
  CHECK(fallback.messages().empty());

  // The way out the message names: mark the row failed and replay the job.
  db.scalar("UPDATE app.email_messages SET status = 'failed' WHERE job_id = '" + id + "' RETURNING 1");
  db.scalar("UPDATE jobhost.jobs SET status = 'queued', attempt_count = 0 WHERE id = '" + id + "' RETURNING 1");
  REQUIRE(completed(db, id));
  CHECK(primary.messages().size() == 1);
}

TEST_CASE("email.send keeps a message a relay took without answering from going to another relay", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.delay_end_of_data_ms(3000);  // past the providers' timeout_ms of 700
  auto host = start_host(config(db, {primary.port(), fallback.port(), 5, 30000, 700}), "email");
  const std::string id = send(db);
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("delivery state unknown: internal:") &&
                                                  Catch::Contains("after the whole message was handed over"));
  CHECK(primary.messages().size() == 1);  // it did arrive
  CHECK(fallback.messages().empty());     // and was not sent a second time
  CHECK(db.scalar("SELECT status || ' ' || provider FROM app.email_messages") == "sending internal");
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") == 1);
}

TEST_CASE("email.send skips a suppressed recipient and records why", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string id = send(db, " Gone@Example.com");
  REQUIRE(completed(db, id));
  CHECK(primary.messages().empty());
  CHECK(fallback.messages().empty());
  CHECK(db.scalar("SELECT status || ': ' || error FROM app.email_messages") == "suppressed: suppressed: hard bounce");
  CHECK(db.scalar("SELECT event || ' ' || recipient || ' ' || (detail->>'reason') FROM app.email_events") ==
        "suppressed gone@example.com hard bounce");
  // The same address at another tenant is not suppressed there.
  db.scalar("INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) VALUES "
            "('tpl2', 't2', 'W', 'a@t2.example', 'S', 'H', 'T') RETURNING 1");
  const std::string other = db.enqueue(
      "email.send", R"({"recipient": "gone@example.com", "template_id": "tpl2", "tenant_id": "t2", "variables": {}})");
  REQUIRE(completed(db, other));
  CHECK(primary.messages().size() == 1);
}

TEST_CASE("email.send refuses bad payloads and unknown templates naming the field", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const auto job = [&](const std::string& payload) { return db.enqueue("email.send", payload); };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {job(R"({"template_id": "tpl", "tenant_id": "t1", "variables": {}})"), "payload.recipient: is required"},
      {job(R"({"recipient": 7, "template_id": "tpl", "tenant_id": "t1", "variables": {}})"),
       "payload.recipient: must be a string, not number"},
      {send(db, "not-an-address"), "payload.recipient: 'not-an-address' has no @"},
      {job(R"({"recipient": "a@example.com", "tenant_id": "t1", "variables": {}})"), "payload.template_id: is required"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "variables": {}})"), "payload.tenant_id: is required"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1"})"), "payload.variables: is required"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": [1]})"),
       "payload.variables: must be an object"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": {"name": {"x": 1}}})"),
       "payload.variables.name: must be a string, number, boolean or null"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": {}, "campaign_id": 5})"),
       "payload.campaign_id: must be a string"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": {}})"),
       "payload.variables.name: missing, and the template uses {{name}}"},
      {job(R"({"recipient": "a@example.com", "template_id": "nope", "tenant_id": "t1", "variables": {}})"),
       "payload.template_id: no template 'nope' for tenant 't1'"},
      {send(db, "a@example.com", "X", "t2"), "payload.template_id: no template 'tpl' for tenant 't2'"},
      {job(R"({"recipient": "a@example.com", "template_id": "tpl", "tenant_id": "t1", "variables": {"name": "X"},
               "campaign_id": "camp-x"})"),
       "payload.campaign_id: no campaign 'camp-x' for tenant 't1'"},
  };
  REQUIRE(eventually([&] {
    for (const auto& [id, _] : cases) {
      if (db.status(id) != "failed") return false;
    }
    return true;
  }, 20s));
  for (const auto& [id, message] : cases) {
    INFO(message);
    CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains(message));
    CHECK(db.field(id, "attempt_count") == "1");  // permanent: never retried
  }
  CHECK(primary.messages().empty());
  CHECK(fallback.messages().empty());
  CHECK(db.count("SELECT count(*) FROM app.email_messages") == 0);
}

TEST_CASE("email.send fails over when the primary refuses or is down", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const auto through_fallback = [&](const std::string& to) {
    const std::string id = send(db, to);
    REQUIRE(completed(db, id));
    CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + id + "'") == "esp");
    CHECK(db.field(id, "attempt_count") == "1");
  };
  primary.refuse_with(554, smtp::Stage::kMail);
  through_fallback("mail554@example.com");
  primary.refuse_with(0, smtp::Stage::kMail);
  primary.refuse_with(451, smtp::Stage::kRcpt);  // temporary: try elsewhere
  through_fallback("rcpt451@example.com");
  primary.refuse_with(0, smtp::Stage::kRcpt);
  primary.refuse_with(452, smtp::Stage::kData);
  through_fallback("data452@example.com");
  primary.refuse_with(0, smtp::Stage::kData);
  primary.refuse_with(554, smtp::Stage::kEndOfData);  // the whole message refused
  through_fallback("eod554@example.com");
  CHECK(primary.messages().empty());
  REQUIRE(fallback.messages().size() == 4);
  CHECK(fallback.messages()[3].to == std::vector<std::string>{"eod554@example.com"});
  CHECK_THAT(host->log(), Catch::Contains("relay internal did not take") && Catch::Contains("MAIL FROM failed: \"554") &&
                              Catch::Contains("RCPT TO failed: \"451") && Catch::Contains("DATA failed: \"452"));
  host.reset();

  primary.stop();  // down
  auto host2 = start_host(config(db, {primary.port(), fallback.port()}), "email");
  through_fallback("down@example.com");
  CHECK(fallback.messages().size() == 5);
  CHECK_THAT(host2->log(), Catch::Contains("Connection refused"));
}

TEST_CASE("email.send fails for good when a relay refuses the recipient with a 5xx", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.refuse_with(550, smtp::Stage::kRcpt);
  auto host = start_host(config(db, {primary.port(), fallback.port(), 1, 30000}), "email");
  const std::string id = send(db, "nobody@example.com");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK_THAT(db.field(id, "last_error_message"),
             Catch::Contains("payload.recipient: 'nobody@example.com' internal refused the recipient: RCPT TO failed: \"550") &&
                 Catch::Contains("recipient refused by the test sink"));
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK(fallback.connections() == 0);  // not offered to another relay
  CHECK(db.scalar("SELECT status || ' ' || provider FROM app.email_messages") == "failed internal");
  CHECK(db.scalar("SELECT event FROM app.email_events") == "failed");
  // Nothing says the address is bad (a bare 550): recorded as a soft bounce, not suppressed.
  CHECK(db.count("SELECT count(*) FROM app.suppressions WHERE email = 'nobody@example.com'") == 0);
  CHECK(db.scalar("SELECT concat_ws(' ', recipient, kind, reply_code, source_file IS NULL) FROM app.email_bounces") ==
        "nobody@example.com soft 550 t");
  // Not a fault of the relay: with failures: 1 its circuit would now be open.
  primary.refuse_with(0, smtp::Stage::kRcpt);
  const std::string next = send(db, "somebody@example.com");
  REQUIRE(completed(db, next));
  CHECK(primary.messages().size() == 1);
}

TEST_CASE("email.send: an unknown user at RCPT is a hard bounce: suppressed, a bounced event, not mailed again",
          "[email][bounce]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.unknown_user("dead@example.com");
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string id = send(db, "Dead@Example.com");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("550 5.1.1") && Catch::Contains("User unknown"));
  CHECK(fallback.connections() == 0);
  CHECK(db.scalar("SELECT reason FROM app.suppressions WHERE tenant_id = 't1' AND email = 'dead@example.com'") ==
        "bounced");
  CHECK(db.scalar("SELECT string_agg(event, ',' ORDER BY id) FROM app.email_events") == "failed,bounced");
  CHECK(db.scalar("SELECT concat_ws(' ', detail->>'kind', detail->>'status', detail->>'reply_code', detail->>'at') "
                  "FROM app.email_events WHERE event = 'bounced'") == "hard 5.1.1 550 rcpt");
  CHECK(db.scalar("SELECT recipient FROM app.email_events WHERE event = 'bounced'") == "dead@example.com");
  CHECK(db.scalar("SELECT concat_ws(' ', recipient, status, reply_code, kind, message_id, job_id, "
                  "email_message_id IS NOT NULL, source_file IS NULL) FROM app.email_bounces") ==
        "dead@example.com 5.1.1 550 hard <" + id + "@jobhost> " + id + " t t");
  // The next message to it is not sent: suppressed before any relay is asked.
  const int before = primary.mail_commands();
  const std::string again = send(db, "dead@example.com");
  REQUIRE(completed(db, again));
  CHECK(primary.mail_commands() == before);
  CHECK(db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + again + "'") == "suppressed");
}

TEST_CASE("email.send opens a circuit breaker after repeated failures and tries again after open_ms", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.refuse_with(451);
  auto host = start_host(config(db, {primary.port(), fallback.port(), 2, 1500}), "email");
  for (int i = 0; i < 4; ++i) REQUIRE(completed(db, send(db, "r" + std::to_string(i) + "@example.com")));
  // Two failures opened the circuit: jobs 3 and 4 went straight to the fallback.
  CHECK(primary.mail_commands() == 2);
  CHECK(primary.connections() == 1);  // a refused transaction leaves the session usable (RSET)
  CHECK(fallback.messages().size() == 4);
  std::this_thread::sleep_for(1600ms);
  primary.refuse_with(0);
  REQUIRE(completed(db, send(db, "later@example.com")));
  CHECK(primary.mail_commands() == 3);  // the half-open trial, which closed it again
  CHECK(primary.messages().size() == 1);
  REQUIRE(completed(db, send(db, "again@example.com")));
  CHECK(primary.messages().size() == 2);
  CHECK(fallback.messages().size() == 4);
}

TEST_CASE("email.send waits for the first circuit to reopen when every relay's circuit is open", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.refuse_with(451);
  fallback.refuse_with(421);
  auto host = start_host(config(db, {primary.port(), fallback.port(), 1, 2500}), "email");
  const std::string id = send(db);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") >= 1; }, 20s));
  primary.refuse_with(0);
  fallback.refuse_with(0);
  REQUIRE(completed(db, id));
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' ORDER BY id LIMIT 1"),
             Catch::Contains("every relay's circuit is open") && Catch::Contains("internal: MAIL FROM failed: \"451") &&
                 Catch::Contains("esp: MAIL FROM failed: \"421"));
  // The backoff alone would have been 100-300 ms; the circuits stayed open 2.5 s.
  CHECK(db.retry_gap_ms(id, 1) > 2000);
  CHECK(primary.messages().size() == 1);
}

TEST_CASE("email.send retries a slow relay and relays that are down, then sends once one answers", "[email]") {
  TestDb db;
  seed(db);
  smtp::Sink slow;
  slow.delay_replies_ms(1500);  // past the providers' timeout_ms of 700
  const int down = closed_port();
  auto host = start_host(config(db, {slow.port(), down, 5, 30000, 700, 10}), "email");
  const std::string id = send(db);
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + id + "'") >= 1; }, 20s));
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' ORDER BY id LIMIT 1"),
             Catch::Contains("internal: timed out") && Catch::Contains("esp: connect to 127.0.0.1:") &&
                 Catch::Contains("Connection refused"));
  CHECK(db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + id + "'") != "sent");
  // The fallback comes up on its port: a later attempt sends.
  smtp::Sink fallback(static_cast<uint16_t>(down));
  REQUIRE(completed(db, id));
  CHECK(fallback.messages().size() == 1);
  CHECK(slow.messages().empty());
  CHECK(db.scalar("SELECT status || ' ' || provider FROM app.email_messages") == "sent esp");
}

TEST_CASE("email.send refuses bad settings naming the key", "[email]") {
  TestDb db;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"      database_url: x\n", "settings.providers: must be a non-empty list"},
      {"      database_url: x\n      providers: []\n", "settings.providers: must be a non-empty list"},
      {"      database_url: x\n      providers: [{ name: a }]\n", "settings.providers[0].url: is required"},
      {"      database_url: x\n      providers: [{ name: a, url: \"http://h\" }]\n",
       "settings.providers[0].url: must be smtp://HOST[:PORT]"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }, { name: b, url: \"smtp://h\", "
       "timeout_ms: soon }]\n",
       "settings.providers[1].timeout_ms: must be a whole number"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }, { name: a, url: \"smtp://i\" }]\n",
       "settings.providers[1].name: 'a' names two providers"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\", timout_ms: 5 }]\n",
       "settings.providers[0].timout_ms: unknown key (did you mean timeout_ms?)"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }]\n      db_pool_sise: 3\n",
       "settings.db_pool_sise: unknown key (did you mean db_pool_size?)"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }]\n      circuit_breaker: { failure: 3 }\n",
       "settings.circuit_breaker.failure: unknown key (did you mean failures?)"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }]\n      relays: []\n",
       "settings.relays: unknown key (known: database_url, db_pool_size, providers, circuit_breaker, helo, limiters, "
       "unsubscribe, verp_domain)"},
      {"      database_url: x\n      providers: [{ name: a, url: \"smtp://h\" }]\n      circuit_breaker: { failures: 0 }\n",
       "settings.circuit_breaker.failures: must be a whole number"},
      {"      providers: [{ name: a, url: \"smtp://h\" }]\n", "settings.database_url: is required"},
  };
  for (const auto& [settings, message] : cases) {
    INFO(settings);
    HostOptions o;
    o.extra_yaml = "  - name: email_send\n    library: " + plugin_dir() + "/libemail_send.so\n" +
                   "    job_types: [email.send]\n    settings:\n" + settings;
    const auto [code, out] = run({bin_dir() + "/jobhost", "--check-config", write_config(db, o, "email-settings")});
    CHECK(code != 0);
    CHECK_THAT(out, Catch::Contains(message));
  }
}

TEST_CASE("smtp-sink, the program, stores what it receives as .eml files and stops on SIGTERM", "[email]") {
  TestDb db;
  seed(db);
  const auto dir = std::filesystem::temp_directory_path() / ("smtp-sink-" + db.prefix());
  std::filesystem::remove_all(dir);
  Process sink({bin_dir() + "/smtp-sink", "--listen", "127.0.0.1:0", "--maildir", (dir / "mail").string()},
               (dir.string() + ".log"));
  REQUIRE(sink.wait_for_log("listening on 127.0.0.1:", 10s));
  std::smatch m;
  const std::string log = sink.log();
  REQUIRE(std::regex_search(log, m, std::regex("listening on 127\\.0\\.0\\.1:(\\d+)")));
  auto host = start_host(config(db, {std::stoi(m[1]), closed_port()}), "email");
  const std::string id = send(db);
  REQUIRE(completed(db, id));
  std::ifstream eml(dir / "mail" / "1.eml", std::ios::binary);
  const std::string data((std::istreambuf_iterator<char>(eml)), std::istreambuf_iterator<char>());
  CHECK(header(data, "Message-ID") == "<" + id + "@jobhost>");
  CHECK(part(data, "text/plain") == "Hi <b>Ann & Co</b>!");
  sink.signal(SIGTERM);
  CHECK(sink.wait(5s) == 0);
  CHECK_THAT(sink.log(), Catch::Contains("1 messages received"));
  std::filesystem::remove_all(dir);
  std::filesystem::remove(dir.string() + ".log");
}

TEST_CASE("email.send: a domain deferring at RCPT is held back without using attempts while others flow", "[email][flow]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  Relays r{primary.port(), fallback.port()};
  r.workers = 4;
  r.deferral_hold_ms = 1500;
  HostOptions o;
  o.extra_yaml = plugin_entry(db, r) + "limiters:\n  \"relay:*\": { concurrency: 8 }\n";
  auto host = start_host(write_config(db, o, "email"), "email");
  // slow.example makes both relays say "421 try later" to its first RCPTs.
  primary.refuse_domain("slow.example", 421, 3);
  fallback.refuse_domain("slow.example", 421, 3);
  std::vector<std::string> slow, fast;
  for (int i = 0; i < 6; ++i) slow.push_back(send(db, "s" + std::to_string(i) + "@slow.example", "S"));
  for (int i = 0; i < 20; ++i) fast.push_back(send(db, "f" + std::to_string(i) + "@fast.example", "F"));
  for (const auto& id : fast) REQUIRE(completed(db, id));
  // The fast domain went through while the slow one was held back.
  CHECK(primary.domain_refusals() >= 1);
  const long long slow_done_early =
      db.count("SELECT count(*) FROM jobhost.jobs WHERE status = 'completed' AND payload->>'recipient' LIKE '%@slow.example'");
  CHECK(slow_done_early < 6);
  for (const auto& id : slow) REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  // Held back, never failed: each job used one attempt; the fast domain never left the primary.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE attempt_count <> 1") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status = 'throttled'") >= 1);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE status IN ('failed', 'retry_scheduled')") == 0);
  CHECK(primary.messages().size() + fallback.messages().size() == 26);
  for (const auto& m : fallback.messages()) CHECK_THAT(m.to.at(0), Catch::EndsWith("@slow.example"));
  CHECK_THAT(host->log(), Catch::Contains("holding relay:internal/domain:slow.example back for 1500 ms"));
}
