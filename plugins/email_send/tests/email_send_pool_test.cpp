// email.send's pooled, pipelined SMTP sessions against relays that misbehave
// (smtp_sink.hpp): dropped after DATA, hung mid-pipeline, closing idle
// sessions; and the database work per message (the template cache).
#include <catch2/catch.hpp>

#include "email_send_fixture.hpp"

using namespace email_fixture;

namespace {

std::string row_status(TestDb& db, const std::string& id) {
  return db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + id + "'");
}

}  // namespace

TEST_CASE("email.send carries many messages on one SMTP session, MAIL, RCPT and DATA pipelined", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  std::vector<std::string> ids;
  for (int i = 0; i < 12; ++i) ids.push_back(send(db, "p" + std::to_string(i) + "@example.com"));
  for (const auto& id : ids) REQUIRE(completed(db, id));
  CHECK(primary.messages().size() == 12);
  CHECK(primary.connections() == 1);
  CHECK(primary.pipelined() == 12);
  // The greeting, EHLO's reply, then per message one write for the group
  // (RSET, MAIL, RCPT, DATA) and one for the end of the message.
  CHECK(primary.reply_writes() == 2 + 2 * 12);
  CHECK(db.count("SELECT count(*) FROM app.email_messages WHERE status = 'sent' AND provider = 'internal'") == 12);
  CHECK(db.count("SELECT count(*) FROM app.email_events WHERE event = 'sent'") == 12);
}

TEST_CASE("email.send waits for PIPELINING before pipelining, and obeys max_messages_per_session", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.advertise_pipelining(false);
  Relays r{primary.port(), fallback.port()};
  r.relay_keys = ", max_messages_per_session: 3";
  auto host = start_host(config(db, r), "email");
  std::vector<std::string> ids;
  for (int i = 0; i < 7; ++i) ids.push_back(send(db, "n" + std::to_string(i) + "@example.com"));
  for (const auto& id : ids) REQUIRE(completed(db, id));
  CHECK(primary.messages().size() == 7);
  CHECK(primary.pipelined() == 0);
  CHECK(primary.connections() == 3);  // 3 + 3 + 1
}

TEST_CASE("email.send shares at most max_sessions sessions among its workers", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.delay_replies_ms(30);  // keeps sessions busy so that workers overlap
  Relays r{primary.port(), fallback.port()};
  r.workers = 6;
  r.relay_keys = ", max_sessions: 2";
  auto host = start_host(config(db, r), "email");
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i) ids.push_back(send(db, "w" + std::to_string(i) + "@example.com"));
  for (const auto& id : ids) REQUIRE(completed(db, id));
  CHECK(primary.messages().size() == 30);
  CHECK(primary.peak_connections() <= 2);
  CHECK(primary.connections() == 2);
  CHECK(fallback.connections() == 0);
}

TEST_CASE("a relay that drops the connection after DATA: the state is unknown, never sent twice, the session "
          "is not reused",
          "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.drop_at(smtp::Stage::kEndOfData, 1);  // takes the message, then the connection dies
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  const std::string lost = send(db, "lost@example.com");
  REQUIRE(eventually([&] { return db.status(lost) == "failed"; }, 20s));
  CHECK_THAT(db.field(lost, "last_error_message"),
             Catch::Contains("delivery state unknown") && Catch::Contains("after the whole message was handed over"));
  CHECK(row_status(db, lost) == "sending");
  CHECK(db.field(lost, "attempt_count") == "1");
  CHECK(fallback.connections() == 0);  // never offered elsewhere
  // The next message goes out on a new session of the same relay.
  const std::string next = send(db, "next@example.com");
  REQUIRE(completed(db, next));
  CHECK(primary.connections() == 2);
  REQUIRE(primary.messages().size() == 2);
  // Replaying the lost job does not send it again.
  db.scalar("UPDATE jobhost.jobs SET status = 'queued', attempt_count = 0, run_at = now() WHERE id = '" + lost +
            "' RETURNING 1");
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + lost + "'") == 2; }, 20s));
  REQUIRE(eventually([&] { return db.status(lost) == "failed"; }, 20s));
  std::this_thread::sleep_for(300ms);
  CHECK(primary.messages().size() == 2);
  CHECK(fallback.messages().empty());
}

TEST_CASE("a relay that hangs mid-pipeline: the message fails over and the hung session is discarded", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.stall_at(smtp::Stage::kRcpt, 1);  // answers MAIL, then nothing
  auto host = start_host(config(db, {primary.port(), fallback.port(), 5, 30000, 700}), "email");
  const std::string id = send(db, "hang@example.com");
  REQUIRE(completed(db, id));
  CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + id + "'") == "esp");
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK(primary.messages().empty());
  CHECK_THAT(host->log(), Catch::Contains("relay internal did not take") && Catch::Contains("timed out waiting for RCPT"));
  const std::string next = send(db, "after@example.com");
  REQUIRE(completed(db, next));
  CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + next + "'") == "internal");
  CHECK(primary.connections() == 2);
  REQUIRE(primary.messages().size() == 1);
  CHECK(primary.messages()[0].to == std::vector<std::string>{"after@example.com"});
}

TEST_CASE("a relay that closes idle sessions: the next message opens a new one without failing over", "[email][pool]") {
  for (const bool with_421 : {true, false}) {
    DYNAMIC_SECTION((with_421 ? "with 421 first" : "silently")) {
      TestDb db;
      seed(db);
      smtp::Sink primary, fallback;
      primary.close_idle_after_ms(300, with_421);
      auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
      REQUIRE(completed(db, send(db, "first@example.com")));
      std::this_thread::sleep_for(800ms);  // the relay closed the session meanwhile
      const std::string id = send(db, "second@example.com");
      REQUIRE(completed(db, id));
      CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + id + "'") == "internal");
      CHECK(primary.messages().size() == 2);
      CHECK(primary.connections() == 2);
      CHECK(fallback.connections() == 0);
      CHECK_THAT(host->log(), !Catch::Contains("did not take"));
    }
  }
}

TEST_CASE("a kept session the relay closes before answering is retried once on a new session", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  primary.advertise_pipelining(false);  // so MAIL is the first command on the kept session
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  REQUIRE(completed(db, send(db, "first@example.com")));
  primary.drop_at(smtp::Stage::kMail, 1);
  const std::string id = send(db, "second@example.com");
  REQUIRE(completed(db, id));
  CHECK(db.scalar("SELECT provider FROM app.email_messages WHERE job_id = '" + id + "'") == "internal");
  CHECK(primary.connections() == 2);
  CHECK(primary.messages().size() == 2);
  CHECK(fallback.connections() == 0);
}

TEST_CASE("email.send closes sessions idle past max_idle_ms itself", "[email][pool]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  Relays r{primary.port(), fallback.port()};
  r.relay_keys = ", max_idle_ms: 200";
  auto host = start_host(config(db, r), "email");
  REQUIRE(completed(db, send(db, "first@example.com")));
  REQUIRE(eventually([&] { return primary.peak_connections() == 1 && primary.transactions() == 1; }, 5s));
  std::this_thread::sleep_for(1500ms);  // the janitor's sweep runs once a second
  REQUIRE(completed(db, send(db, "second@example.com")));
  CHECK(primary.connections() == 2);
  CHECK(primary.messages().size() == 2);
}

TEST_CASE("email.send caches the template and sees an edit with the next message", "[email][db]") {
  TestDb db;
  seed(db);
  smtp::Sink primary, fallback;
  auto host = start_host(config(db, {primary.port(), fallback.port()}), "email");
  REQUIRE(completed(db, send(db, "a@example.com", "Ann")));
  REQUIRE(completed(db, send(db, "b@example.com", "Bob")));
  db.scalar("UPDATE app.email_templates SET subject = 'Changed {{name}}' WHERE id = 'tpl' RETURNING 1");
  REQUIRE(completed(db, send(db, "c@example.com", "Cy")));
  REQUIRE(primary.messages().size() == 3);
  CHECK(header(primary.messages()[1].data, "Subject") == "Hello Bob");
  CHECK(header(primary.messages()[2].data, "Subject") == "Changed Cy");
  CHECK(db.scalar("SELECT subject FROM app.email_messages WHERE recipient = 'c@example.com'") == "Changed Cy");
  // Deleted: the next message fails naming it, though the cache still has it.
  db.scalar("DELETE FROM app.email_templates WHERE id = 'tpl' RETURNING 1");
  const std::string gone = send(db, "d@example.com");
  REQUIRE(eventually([&] { return db.status(gone) == "failed"; }, 20s));
  CHECK_THAT(db.field(gone, "last_error_message"), Catch::Contains("payload.template_id: no template 'tpl'"));
  CHECK(primary.messages().size() == 3);
}
