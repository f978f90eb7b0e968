// One-click unsubscribe end to end (RFC 8058, DESIGN §11): a campaign message
// carries List-Unsubscribe with a signed link; the admin API of a real host
// takes the one-click POST, suppresses the address for that tenant and
// records it; forged, altered and expired links change nothing.
#include <ctime>
#include <regex>

#include <catch2/catch.hpp>
#include <jobhost_plugins/unsubscribe_token.hpp>
#include <nlohmann/json.hpp>

#include "api_host.hpp"
#include "email_send_fixture.hpp"

using namespace jobhost::test;
using namespace email_fixture;

namespace {

const std::string kSecret = "unsubscribe-secret-for-tests-0123";

std::string campaign_send(TestDb& db, const std::string& to) {
  return db.enqueue("email.send", R"({"recipient": ")" + to +
                                      R"(", "template_id": "tpl", "tenant_id": "t1", "campaign_id": "c1",)"
                                      R"( "variables": {"name": "Ann"}})");
}

// The token of a List-Unsubscribe value's https URL.
std::string token_of(const std::string& list_unsubscribe) {
  std::smatch m;
  REQUIRE(std::regex_search(list_unsubscribe, m, std::regex("<https://mail\\.example\\.test/api/v1/unsubscribe/([A-Za-z0-9._-]+)>")));
  return m[1];
}

}  // namespace

TEST_CASE("email.send: campaign mail carries a signed one-click unsubscribe that the API honours", "[email][unsubscribe]") {
  TestDb db;
  seed(db);
  db.scalar("INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('l1', 't1', 'L') RETURNING 1");
  db.scalar("INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id, status) "
            "VALUES ('c1', 't1', 'Spring', 'l1', 'tpl', 'sending') RETURNING 1");
  smtp::Sink primary, fallback;
  Relays r{primary.port(), fallback.port()};
  r.extra_settings = "      unsubscribe: { url: \"https://mail.example.test/api/v1/unsubscribe/\", mailto: "
                     "\"unsubscribe@t1.example\", secret: \"" + kSecret + "\", ttl_days: 30 }\n";
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  o.extra_yaml = plugin_entry(db, r);
  ApiProcess api(db, o, "  unsubscribe_secret: \"" + kSecret + "\"\n");
  auto cli = api.client();

  const std::string id = campaign_send(db, "Ann@Example.com");
  REQUIRE(completed(db, id));
  const std::string transactional = send(db, "bob@example.com");
  REQUIRE(completed(db, transactional));
  REQUIRE(primary.messages().size() == 2);
  const std::string& mail = primary.messages()[0].data;
  const std::string value = header(mail, "List-Unsubscribe");
  CHECK(header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click");
  const std::string token = token_of(value);
  CHECK_THAT(value, Catch::Contains("<mailto:unsubscribe@t1.example?subject=unsubscribe%20" + token + ">"));
  // Mail that is not a campaign's has none.
  CHECK(header(primary.messages()[1].data, "List-Unsubscribe").empty());
  // The token names this tenant, address and message, and expires in 30 days.
  const auto checked = jobhost_plugins::unsubscribe::check(token, kSecret, std::time(nullptr));
  REQUIRE(checked.claims);
  CHECK(checked.claims->tenant == "t1");
  CHECK(checked.claims->email == "ann@example.com");
  CHECK(std::to_string(checked.claims->message_row) ==
        db.scalar("SELECT id FROM app.email_messages WHERE job_id = '" + id + "'"));
  CHECK(checked.claims->expires > std::time(nullptr) + 29 * 86400);
  CHECK(checked.claims->expires < std::time(nullptr) + 31 * 86400);

  const std::string url = "/api/v1/unsubscribe/" + token;
  // Following the link (GET) only shows a button: a link scanner unsubscribes no one.
  auto res = cli.Get(url);
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK_THAT(res->body, Catch::Contains("<form method=\"post\">"));
  CHECK(db.count("SELECT count(*) FROM app.suppressions WHERE email = 'ann@example.com'") == 0);

  // Forged, altered or expired: 403, nothing changes. No bearer token is involved.
  // The signature's first character: its last one holds two bits that base64
  // decoding drops, so changing it between 'A' and 'B' (when the signature
  // ended in one of them) left the same signature and the test failed.
  std::string altered = token;
  char& sig = altered[altered.rfind('.') + 1];
  sig = sig == 'A' ? 'B' : 'A';
  const std::string other_address = jobhost_plugins::unsubscribe::make(
      {"t1", "bob@example.com", checked.claims->message_row, checked.claims->expires}, "some-other-secret-0123");
  const std::string expired = jobhost_plugins::unsubscribe::make(
      {"t1", "ann@example.com", checked.claims->message_row, std::time(nullptr) - 60}, kSecret);
  // Signed right but for an address the message was not sent to.
  const std::string wrong_message = jobhost_plugins::unsubscribe::make(
      {"t1", "bob@example.com", checked.claims->message_row, checked.claims->expires}, kSecret);
  for (const auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {altered, "signature does not match"},
           {other_address, "signature does not match"},
           {expired, "has expired"},
           {wrong_message, "names no message of this address"},
           {"v1.garbage", "not an unsubscribe token"}}) {
    INFO(bad);
    res = cli.Post("/api/v1/unsubscribe/" + bad, "List-Unsubscribe=One-Click", "application/x-www-form-urlencoded");
    REQUIRE(res);
    CHECK(res->status == 403);
    CHECK_THAT(res->body, Catch::Contains(why));
  }
  CHECK(db.count("SELECT count(*) FROM app.suppressions WHERE reason = 'unsubscribed'") == 0);
  // A POST without RFC 8058's body is refused too.
  res = cli.Post(url, "", "application/x-www-form-urlencoded");
  REQUIRE(res);
  CHECK(res->status == 400);

  // The one-click POST, as a mailbox provider sends it.
  res = cli.Post(url, "List-Unsubscribe=One-Click", "application/x-www-form-urlencoded");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(nlohmann::json::parse(res->body)["already"] == false);
  CHECK(db.scalar("SELECT tenant_id || ' ' || reason FROM app.suppressions WHERE email = 'ann@example.com'") ==
        "t1 unsubscribed");
  CHECK(db.scalar("SELECT concat_ws(' ', event, campaign_id, recipient) FROM app.email_events WHERE event = "
                  "'unsubscribed'") == "unsubscribed c1 ann@example.com");
  // Again: still 200, no second event.
  res = cli.Post(url, "List-Unsubscribe=One-Click", "application/x-www-form-urlencoded");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(nlohmann::json::parse(res->body)["already"] == true);
  CHECK(db.count("SELECT count(*) FROM app.email_events WHERE event = 'unsubscribed'") == 1);
  // The next campaign message to the address is not sent.
  const std::string next = campaign_send(db, "ann@example.com");
  REQUIRE(completed(db, next));
  CHECK(primary.messages().size() == 2);
  CHECK(db.scalar("SELECT status FROM app.email_messages WHERE job_id = '" + next + "'") == "suppressed");
}

TEST_CASE("email.send refuses bad unsubscribe and verp settings naming the key", "[email][unsubscribe]") {
  TestDb db;
  for (const auto& [settings, message] : std::vector<std::pair<std::string, std::string>>{
           {"      unsubscribe: { url: \"ftp://x\", secret: \"" + kSecret + "\" }\n", "settings.unsubscribe.url"},
           {"      unsubscribe: { url: \"https://x/u\", secret: \"short\" }\n", "settings.unsubscribe.secret"},
           {"      unsubscribe: { url: \"https://x/u\" }\n", "settings.unsubscribe.secret: is required"},
           {"      unsubscribe: { url: \"https://x/u\", secret: \"" + kSecret + "\", typo: 1 }\n",
            "settings.unsubscribe.typo"},
           {"      verp_domain: \"not a domain\"\n", "settings.verp_domain"}}) {
    Relays r{2525, 2526};
    r.extra_settings = settings;
    HostOptions o;
    o.extra_yaml = plugin_entry(db, r);
    const auto [rc, out] = run({bin_dir() + "/jobhost", "--check-config", write_config(db, o, "bad")});
    INFO(out);
    CHECK(rc != 0);
    CHECK_THAT(out, Catch::Contains(message));
  }
}
