// bounce.process and bounce.scan against PostgreSQL: the plugin in-process
// (this binary compiles its source; jobhost/testing.hpp runs handle()) for the
// effects of each kind, idempotence, the scan and the refusals, and once
// through a real host with bounce.scan on its schedule.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <jobhost/testing.hpp>

#include "harness.hpp"

extern "C" const jobhost_plugin* jobhost_plugin_entry(void);

using namespace jobhost::test;
using jobhost::sdk::testing::Harness;
using jobhost::sdk::testing::TestJob;
namespace fs = std::filesystem;

namespace {

// The job ids the corpus's messages name (tests/corpus/*.expect).
const std::string kJ1 = "6f1c2a3e-4b5d-4e6f-8a9b-0c1d2e3f4a5b";
const std::string kJ2 = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a";
const std::string kJ3 = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

std::string corpus(const std::string& name) {
  std::ifstream in(fs::path(BOUNCE_CORPUS_DIR) / name, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A Maildir of the test's own, removed at the end.
struct Inbound {
  fs::path root;
  explicit Inbound(const std::string& tag) : root(fs::temp_directory_path() / (tag + "-inbound")) {
    fs::remove_all(root);
    fs::create_directories(root / "new");
    root = fs::canonical(root);
  }
  ~Inbound() { fs::remove_all(root); }
  std::string drop(const std::string& name, const std::string& bytes) const {
    std::ofstream(root / "new" / name, std::ios::binary) << bytes;
    return "new/" + name;
  }
  bool in_cur(const std::string& name) const { return fs::exists(root / "cur" / name); }
  bool in_new(const std::string& name) const { return fs::exists(root / "new" / name); }
};

nlohmann::json settings(TestDb& db, const Inbound& in, nlohmann::json more = nlohmann::json::object()) {
  nlohmann::json s{{"database_url", db.url()}, {"inbound_root", in.root.string()}, {"soft_bounce_limit", 3},
                   {"soft_bounce_window_days", 30}};
  s.update(more);
  return s;
}

// Two tenants; t1 sent J1 and J2, t2 sent J3; t1 has a webhook endpoint.
void seed(TestDb& db) {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.email_messages (tenant_id, job_id, template_id, recipient, status, message_id) VALUES "
            "('t1', '" + kJ1 + "', 'tpl', 'NoSuchUser@example.org', 'sent', '<" + kJ1 + "@jobhost>'), "
            "('t1', '" + kJ2 + "', 'tpl', 'dora@example.org', 'sent', '<" + kJ2 + "@jobhost>'), "
            "('t2', '" + kJ3 + "', 'tpl', 'customer@example.net', 'sent', '<" + kJ3 + "@jobhost>') RETURNING 1");
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('w1', 't1', 'https://hooks.example.com/b', 'secret-0123456789ab'), "
            "('w2', 't2', 'https://hooks.example.com/c', 'secret-0123456789ab') RETURNING 1");
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
  return s;
}

jobhost::sdk::testing::Run process(Harness& h, const std::string& path) {
  return h.run(TestJob{"bounce.process", {{"path", path}}});
}

long long rows(TestDb& db, const std::string& where = "true") {
  return db.count("SELECT count(*) FROM app.email_bounces WHERE " + where);
}

}  // namespace

TEST_CASE("a hard bounce matched by VERP suppresses the address, records the event and queues the webhook",
          "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  Harness h(jobhost_plugin_entry(), settings(db, in));
  const std::string path = in.drop("1.hard", corpus("postfix_dsn_user_unknown.eml"));
  const auto run = process(h, path);
  REQUIRE(run.ok());
  CHECK(db.scalar("SELECT concat_ws('|', tenant_id, recipient, status, reply_code, kind, message_id, job_id, "
                  "email_message_id = (SELECT id FROM app.email_messages WHERE job_id = '" + kJ1 + "'), source_file) "
                  "FROM app.email_bounces") ==
        "t1|nosuchuser@example.org|5.1.1|550|hard|<" + kJ1 + "@jobhost>|" + kJ1 + "|t|" + path);
  CHECK(db.scalar("SELECT tenant_id || '|' || email || '|' || reason FROM app.suppressions") ==
        "t1|nosuchuser@example.org|bounced");
  CHECK(db.scalar("SELECT event || '|' || recipient || '|' || (detail->>'status') || '|' || (detail->>'kind') "
                  "FROM app.email_events") == "bounced|nosuchuser@example.org|5.1.1|hard");
  CHECK(db.scalar("SELECT payload->>'event' || '|' || (payload->'data'->>'recipient') || '|' || "
                  "(payload->>'endpoint_id') FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") ==
        "email.bounced|nosuchuser@example.org|w1");
  CHECK(in.in_cur("1.hard"));
  CHECK_FALSE(in.in_new("1.hard"));

  // The job again (its move to cur/ was done): nothing more.
  CHECK(process(h, path).ok());
  // A crash between the commit and the move: the file is back in new/ and the
  // attempt runs again. The unique key finds its rows; no effect repeats.
  fs::rename(in.root / "cur" / "1.hard", in.root / "new" / "1.hard");
  CHECK(process(h, path).ok());
  CHECK(rows(db) == 1);
  CHECK(db.count("SELECT count(*) FROM app.email_events") == 1);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") == 1);
  CHECK(in.in_cur("1.hard"));
}

TEST_CASE("a bounce and a complaint are matched by the Message-ID of the returned original", "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  Harness h(jobhost_plugin_entry(), settings(db, in));
  // No VERP address anywhere: the text/rfc822-headers part's Message-ID names J1.
  REQUIRE(process(h, in.drop("m1", corpus("rfc3464_minimal.eml"))).ok());
  CHECK(db.scalar("SELECT tenant_id || '|' || job_id || '|' || kind FROM app.email_bounces") == "t1|" + kJ1 + "|hard");
  CHECK(db.scalar("SELECT email FROM app.suppressions WHERE reason = 'bounced'") == "louisl@larry.example.org");

  // An ARF report with the recipient redacted: the message we sent names it.
  REQUIRE(process(h, in.drop("c1", corpus("arf_redacted.eml"))).ok());
  CHECK(db.scalar("SELECT tenant_id || '|' || recipient || '|' || kind FROM app.email_bounces WHERE source_file = 'new/c1'") ==
        "t2|customer@example.net|complaint");
  CHECK(db.scalar("SELECT tenant_id || '|' || email || '|' || reason FROM app.suppressions WHERE reason = 'complained'") ==
        "t2|customer@example.net|complained");
  CHECK(db.scalar("SELECT event || '|' || tenant_id FROM app.email_events WHERE event = 'complained'") == "complained|t2");
  CHECK(db.scalar("SELECT payload->>'event' || '|' || (payload->>'endpoint_id') FROM jobhost.jobs "
                  "WHERE queue_name = 'webhook.dispatch' AND payload->>'tenant_id' = 't2'") == "email.complained|w2");
}

TEST_CASE("soft bounces suppress only at soft_bounce_limit within soft_bounce_window_days, and 5.7.1 is soft",
          "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  Harness h(jobhost_plugin_entry(), settings(db, in));
  // One old soft bounce, outside the window: it does not count.
  db.scalar("INSERT INTO app.email_bounces (tenant_id, recipient, kind, source_file, created_at) VALUES "
            "('t1', 'real.person@gmail.com', 'soft', 'old', now() - interval '40 days') RETURNING 1");
  const std::string spam = corpus("gmail_dsn_policy_5_7_1.eml");  // Message-ID J2, t1
  REQUIRE(process(h, in.drop("s1", spam)).ok());
  CHECK(db.scalar("SELECT status || '|' || kind FROM app.email_bounces WHERE source_file = 'new/s1'") == "5.7.1|soft");
  REQUIRE(process(h, in.drop("s2", spam)).ok());
  CHECK(db.count("SELECT count(*) FROM app.suppressions") == 0);
  CHECK(db.count("SELECT count(*) FROM app.email_events WHERE event = 'bounced' AND detail->>'kind' = 'soft'") == 2);
  REQUIRE(process(h, in.drop("s3", spam)).ok());
  CHECK(db.scalar("SELECT tenant_id || '|' || email || '|' || reason FROM app.suppressions") ==
        "t1|real.person@gmail.com|soft_bounce");
}

TEST_CASE("auto-replies, unknown formats and unknown tenants are stored and do nothing else", "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  Harness h(jobhost_plugin_entry(), settings(db, in));
  REQUIRE(process(h, in.drop("a1", corpus("autoreply_x_autoreply.eml"))).ok());  // J3, words like a bounce
  REQUIRE(process(h, in.drop("u1", corpus("unknown_reply.eml"))).ok());          // J2
  // A hard bounce naming no message of ours.
  const std::string stranger = replace_all(corpus("exim_text_unrouteable.eml"), kJ1, "ffffffff" + kJ1.substr(8));
  REQUIRE(process(h, in.drop("x1", stranger)).ok());
  CHECK(db.scalar("SELECT string_agg(source_file || ':' || kind || ':' || coalesce(tenant_id, 'none') || ':' || "
                  "recipient, ' ' ORDER BY source_file) FROM app.email_bounces") ==
        "new/a1:auto_reply:t2:carla@example.org new/u1:unknown:t1:dora@example.org "
        "new/x1:hard:none:nobody@unrouted.example");
  CHECK(db.count("SELECT count(*) FROM app.suppressions") == 0);
  CHECK(db.count("SELECT count(*) FROM app.email_events") == 0);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") == 0);
  CHECK(db.scalar("SELECT diagnostic FROM app.email_bounces WHERE source_file = 'new/u1'").find("not a delivery status") == 0);
}

TEST_CASE("malformed, truncated, binary and huge files fail for good with the reason, and write nothing", "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  Harness h(jobhost_plugin_entry(), settings(db, in, {{"max_message_bytes", 65536}}));
  const std::string dsn = corpus("postfix_dsn_user_unknown.eml");
  const std::pair<std::string, std::string> cases[] = {
      {corpus("malformed_binary.eml"), "NUL byte"},
      {dsn.substr(0, dsn.find("Final-Recipient")), "truncated"},
      {"", "empty"},
      {"random words, no header\n\x01\x02\x03\xff\xfe\n", "not a mail message"},
      {dsn + std::string(70000, 'x'), "max_message_bytes"},
  };
  int n = 0;
  for (const auto& [bytes, reason] : cases) {
    const std::string name = "bad" + std::to_string(n++);
    const auto run = process(h, in.drop(name, bytes));
    INFO(name << ": " << run.error);
    CHECK(run.permanent());
    CHECK(run.error.find(reason) != std::string::npos);
    CHECK(run.error.find("new/" + name) != std::string::npos);
    CHECK(in.in_new(name));  // left for the operator
  }
  CHECK(rows(db) == 0);
}

TEST_CASE("payload paths outside the inbound root are refused: .., absolute, escaping symlinks", "[bounce]") {
  TestDb db;
  Inbound in(db.prefix());
  const fs::path outside = in.root.parent_path() / (db.prefix() + "-outside.eml");
  std::ofstream(outside) << corpus("postfix_dsn_user_unknown.eml");
  fs::create_symlink(outside, in.root / "new" / "link");
  Harness h(jobhost_plugin_entry(), settings(db, in));
  for (const auto& [path, reason] : {std::pair<std::string, std::string>{"../" + outside.filename().string(), "'..'"},
                                     {outside.string(), "absolute"},
                                     {"new/link", "outside settings.inbound_root"},
                                     {"new/missing", "no such file"}}) {
    const auto run = process(h, path);
    INFO(path << ": " << run.error);
    CHECK(run.permanent());
    CHECK(run.error.find(reason) != std::string::npos);
  }
  CHECK(fs::exists(outside));
  CHECK(rows(db) == 0);
  fs::remove(outside);
  const std::string not_a_folder = (in.root / in.drop("plain", "x")).string();
  CHECK_THROWS_WITH(Harness(jobhost_plugin_entry(), settings(db, in, {{"inbound_root", not_a_folder}})),
                    Catch::Contains("settings.inbound_root: '" + not_a_folder + "' is not a directory"));
  // Not there yet: the MTA creates the Maildir with its first bounce; a scan finds nothing.
  Harness early(jobhost_plugin_entry(), settings(db, in, {{"inbound_root", (in.root / "later").string()}}));
  CHECK(early.run(TestJob{"bounce.scan"}).ok());
  CHECK_THROWS_WITH(Harness(jobhost_plugin_entry(), settings(db, in, {{"soft_bounce_limt", 3}})),
                    Catch::Contains("did you mean soft_bounce_limit"));
}

TEST_CASE("two scanners at once turn each file of new/ into exactly one bounce.process job", "[bounce]") {
  TestDb db;
  Inbound in(db.prefix());
  constexpr int kFiles = 60;
  for (int i = 0; i < kFiles; ++i) in.drop("17645" + std::to_string(1000 + i) + ".M1P2.host", "x");
  in.drop(".hidden", "x");
  // Two plugin instances, as on two hosts, each scanning from two threads.
  Harness a(jobhost_plugin_entry(), settings(db, in)), b(jobhost_plugin_entry(), settings(db, in));
  std::atomic<int> ok{0};
  {
    std::vector<std::jthread> scanners;
    for (Harness* h : {&a, &b, &a, &b}) {
      scanners.emplace_back([&ok, h] {
        for (int round = 0; round < 3; ++round) ok += h->run(TestJob{"bounce.scan"}).ok() ? 1 : 0;
      });
    }
  }
  CHECK(ok == 12);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'bounce.process'") == kFiles);
  CHECK(db.count("SELECT count(DISTINCT payload->>'path') FROM jobhost.jobs WHERE queue_name = 'bounce.process' "
                 "AND payload->>'path' LIKE 'new/17645%' AND unique_key = payload->>'path'") == kFiles);
}

TEST_CASE("through a real host: the schedule scans new/, each file is processed once and moved to cur/",
          "[bounce]") {
  TestDb db;
  seed(db);
  Inbound in(db.prefix());
  in.drop("e1", corpus("postfix_dsn_user_unknown.eml"));
  in.drop("e2", corpus("arf_redacted.eml"));
  in.drop("e3", corpus("autoreply_outlook.eml"));
  in.drop("e4", corpus("malformed_binary.eml"));
  HostOptions o;
  o.roles = "[migrator, worker, reaper, scheduler]";
  o.extra_yaml = "  - name: bounce_process\n"
                 "    library: " + plugin_dir() + "/libbounce_process.so\n"
                 "    job_types: [bounce.process, bounce.scan]\n"
                 "    concurrency: { min: 1, max: 4 }\n"
                 "    retry: { max_attempts: 3, base_ms: 50, max_ms: 200 }\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      inbound_root: \"" + in.root.string() + "\"\n"
                 "schedules:\n"
                 "  - { job_type: bounce.scan, cron: \"* * * * * *\", payload: {} }\n";
  auto host = start_host(write_config(db, o, "bounce"), "bounce");
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'bounce.process' AND status IN "
                    "('completed', 'failed')") == 4;
  }, 30s));
  INFO(host->log());
  // Later scans find nothing new: still one job a file.
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'bounce.scan' AND status = 'completed'") >= 3;
  }, 10s));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'bounce.process'") == 4);
  CHECK(db.scalar("SELECT string_agg(source_file || ':' || kind, ' ' ORDER BY source_file) FROM app.email_bounces") ==
        "new/e1:hard new/e2:complaint new/e3:auto_reply");
  CHECK(db.scalar("SELECT status FROM jobhost.jobs WHERE queue_name = 'bounce.process' AND payload->>'path' = 'new/e4'") ==
        "failed");
  CHECK(in.in_cur("e1"));
  CHECK(in.in_cur("e2"));
  CHECK(in.in_cur("e3"));
  CHECK(in.in_new("e4"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") == 2);
}
