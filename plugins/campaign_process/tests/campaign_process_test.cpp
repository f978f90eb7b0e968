// campaign.process through a real jobhost and PostgreSQL: the fan-out, its
// exactly-once resumption after kill -9, and the campaigns it must refuse or skip.
// No email_send plugin is loaded, so the email.send jobs it enqueues stay queued
// where the tests can count them.
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "harness.hpp"
#include "settings_check.hpp"

using namespace jobhost::test;

namespace {

struct CampaignOptions {
  int batch_size = 100;
  int concurrency = 2;
  int max_attempts = 5;
  std::string database_url;  // default: the test's database
};

CampaignOptions batch(int size) {
  CampaignOptions c;
  c.batch_size = size;
  return c;
}

CampaignOptions unreachable_database() {
  CampaignOptions c;
  c.max_attempts = 2;
  c.database_url = "postgresql://postgres@127.0.0.1:1/none";
  return c;
}

std::string config(const TestDb& db, const CampaignOptions& c = {}) {
  HostOptions o;
  o.extra_yaml = "  - name: campaign_process\n"
                 "    library: " + plugin_dir() + "/libcampaign_process.so\n"
                 "    job_types: [campaign.process, campaign.finish]\n"
                 "    concurrency: { min: 1, max: " + std::to_string(c.concurrency) + " }\n"
                 "    retry: { max_attempts: " + std::to_string(c.max_attempts) + ", base_ms: 50, max_ms: 500 }\n"
                 "    timeout_ms: 60000\n"
                 "    settings:\n"
                 "      database_url: \"" + (c.database_url.empty() ? db.url() : c.database_url) + "\"\n"
                 "      db_pool_size: 2\n"
                 "      batch_size: " + std::to_string(c.batch_size) + "\n";
  return write_config(db, o);
}

void exec(TestDb& db, const std::string& sql) {
  pqxx::work tx(db.conn());
  tx.exec(sql);
  tx.commit();
}

// Tenant t, its template tpl_t and list list_t holding n contacts
// (t-user<i>@example.com, "User <i>", {"city": "C<i>"}).
void seed_tenant(TestDb& db, const std::string& t, int n) {
  exec(db, "INSERT INTO app.tenants (id, name) VALUES ('" + t + "', 'Tenant " + t + "');"
           "INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) "
           "VALUES ('tpl_" + t + "', '" + t + "', 'T', 'news@example.com', 'Hi {{name}}', '<p>{{name}}</p>', '{{name}}');"
           "INSERT INTO app.contact_lists (id, tenant_id, name, contact_count) VALUES ('list_" + t + "', '" + t + "', 'L', " +
           std::to_string(n) + ");"
           "INSERT INTO app.contacts (tenant_id, email, name, attributes) "
           "SELECT '" + t + "', '" + t + "-user' || g || '@example.com', 'User ' || g, jsonb_build_object('city', 'C' || g) "
           "FROM generate_series(1, " + std::to_string(n) + ") g;"
           "INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id) "
           "SELECT tenant_id, 'list_" + t + "', id FROM app.contacts WHERE tenant_id = '" + t + "';");
}

void add_campaign(TestDb& db, const std::string& t, const std::string& id, const std::string& status = "scheduled",
                  const std::string& list = "") {
  exec(db, "INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id, status) VALUES ('" + id + "', '" +
           t + "', 'Spring', '" + (list.empty() ? "list_" + t : list) + "', 'tpl_" + t + "', '" + status + "')");
}

std::string enqueue_campaign(TestDb& db, const std::string& t, const std::string& id) {
  return db.enqueue("campaign.process", nlohmann::json{{"campaign_id", id}, {"tenant_id", t}}.dump());
}

long long email_jobs(TestDb& db) {
  return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send'");
}

std::string campaign(TestDb& db, const std::string& id, const std::string& column) {
  return db.scalar("SELECT " + column + " FROM app.campaigns WHERE id = '" + id + "'");
}

}  // namespace

TEST_CASE("a campaign enqueues one email.send per list member with the contact's variables, then is sent",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "ta", 250);
  seed_tenant(db, "tb", 30);  // another tenant's contacts must not leak in
  // A second list of ta whose members are not this campaign's audience.
  exec(db, "INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('other_ta', 'ta', 'O');"
           "INSERT INTO app.contacts (tenant_id, email, name) VALUES ('ta', 'outsider@example.com', NULL);"
           "INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id) "
           "SELECT 'ta', 'other_ta', id FROM app.contacts WHERE email = 'outsider@example.com'");
  add_campaign(db, "ta", "camp_1", "draft");
  auto host = start_host(config(db, batch(100)));
  const auto id = enqueue_campaign(db, "ta", "camp_1");

  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  CHECK(campaign(db, "camp_1", "status") == "sent");
  CHECK(campaign(db, "camp_1", "enqueued_count") == "250");
  CHECK(campaign(db, "camp_1", "started_at <= finished_at") == "t");
  CHECK(campaign(db, "camp_1", "cursor_contact_id") ==
        db.scalar("SELECT max(contact_id) FROM app.contact_list_members WHERE list_id = 'list_ta'"));
  CHECK(email_jobs(db) == 250);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send' AND priority <> 100") == 0);
  // Exactly the list's members, each once.
  CHECK(db.count("SELECT count(*) FROM app.contact_list_members m JOIN app.contacts c ON c.id = m.contact_id "
                 "WHERE m.list_id = 'list_ta' AND NOT EXISTS (SELECT 1 FROM jobhost.jobs j "
                 "WHERE j.queue_name = 'email.send' AND j.payload->>'recipient' = c.email)") == 0);
  CHECK(db.count("SELECT count(DISTINCT payload->>'recipient') FROM jobhost.jobs WHERE queue_name = 'email.send'") == 250);

  // One payload in full: what email.send's validation expects.
  const auto payload = nlohmann::json::parse(db.scalar(
      "SELECT payload FROM jobhost.jobs WHERE queue_name = 'email.send' AND payload->>'recipient' = 'ta-user7@example.com'"));
  CHECK(payload == nlohmann::json::parse(R"({"recipient": "ta-user7@example.com", "template_id": "tpl_ta",
      "tenant_id": "ta", "campaign_id": "camp_1",
      "variables": {"name": "User 7", "email": "ta-user7@example.com", "city": "C7"}})"));
  // The jobs are one batch, closed with the last page: it finishes (and
  // campaign.finish completes the campaign) once they have all ended.
  const std::string batch_id = campaign(db, "camp_1", "batch_id");
  REQUIRE_FALSE(batch_id.empty());
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send' AND batch_id = '" + batch_id + "'") ==
        250);
  CHECK(db.scalar("SELECT state || ' ' || total FROM jobhost.batch_status WHERE id = '" + batch_id + "'") ==
        "closed 250");
  // The job's log shows it paged (3 pages of 100) rather than enqueuing one by one.
  CHECK(db.count("SELECT count(DISTINCT created_at) FROM jobhost.jobs WHERE queue_name = 'email.send'") == 3);
}

TEST_CASE("a fan-out killed with kill -9 mid-way resumes and enqueues each of 10,000 contacts exactly once",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tk", 10000);
  add_campaign(db, "tk", "camp_big");
  const std::string cfg = config(db, batch(25));
  auto first = start_host(cfg, "first");
  const auto id = enqueue_campaign(db, "tk", "camp_big");

  // Poll tightly (the whole fan-out takes about a second at 25 contacts a
  // page) and kill once a fifth is out, while later pages are in flight.
  pqxx::connection watch(db.url());
  long long seen = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    pqxx::nontransaction q(watch);
    seen = q.exec("SELECT enqueued_count FROM app.campaigns WHERE id = 'camp_big'")[0][0].as<long long>();
    if (seen >= 2000) break;
    std::this_thread::sleep_for(2ms);
  }
  first->kill9();
  REQUIRE(first->wait(5s).has_value());
  INFO("enqueued before the kill: " << seen);
  if (std::getenv("CAMPAIGN_TEST_VERBOSE")) WARN("enqueued when killed: " << seen);
  REQUIRE(seen > 0);
  REQUIRE(seen < 10000);
  const long long at_kill = std::stoll(campaign(db, "camp_big", "enqueued_count"));
  CHECK(at_kill < 10000);
  CHECK(email_jobs(db) == at_kill);  // the cursor and the jobs moved together
  CHECK(campaign(db, "camp_big", "status") == "sending");

  auto second = start_host(cfg, "second");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 60s));
  CHECK(db.field(id, "attempt_count") == "2");
  CHECK(campaign(db, "camp_big", "status") == "sent");
  CHECK(campaign(db, "camp_big", "enqueued_count") == "10000");
  CHECK(email_jobs(db) == 10000);
  CHECK(db.count("SELECT count(DISTINCT payload->>'recipient') FROM jobhost.jobs WHERE queue_name = 'email.send'") ==
        10000);
  CHECK(db.count("SELECT count(*) FROM app.contacts c WHERE NOT EXISTS (SELECT 1 FROM jobhost.jobs j "
                 "WHERE j.queue_name = 'email.send' AND j.payload->>'recipient' = c.email)") == 0);
}

TEST_CASE("two attempts running the same campaign at once never enqueue a contact twice", "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tc", 3000);
  add_campaign(db, "tc", "camp_twice");
  auto host = start_host(config(db, batch(20)));
  // Two jobs for one campaign (a producer's double click), run side by side.
  const auto a = enqueue_campaign(db, "tc", "camp_twice");
  const auto b = enqueue_campaign(db, "tc", "camp_twice");
  REQUIRE(eventually([&] { return db.status(a) == "completed" && db.status(b) == "completed"; }, 60s));
  CHECK(campaign(db, "camp_twice", "status") == "sent");
  CHECK(campaign(db, "camp_twice", "enqueued_count") == "3000");
  CHECK(email_jobs(db) == 3000);
  CHECK(db.count("SELECT count(DISTINCT payload->>'recipient') FROM jobhost.jobs WHERE queue_name = 'email.send'") ==
        3000);
}

TEST_CASE("a campaign cancelled while sending stops at the next page", "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tx", 5000);
  add_campaign(db, "tx", "camp_stop");
  auto host = start_host(config(db, batch(10)));
  const auto id = enqueue_campaign(db, "tx", "camp_stop");
  REQUIRE(eventually([&] { return campaign(db, "camp_stop", "enqueued_count") != "0"; }, 20s));
  // What the application does; it waits for the page in flight (row lock).
  exec(db, "UPDATE app.campaigns SET status = 'cancelled' WHERE id = 'camp_stop'");
  const long long at_cancel = std::stoll(campaign(db, "camp_stop", "enqueued_count"));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  CHECK(at_cancel < 5000);
  CHECK(campaign(db, "camp_stop", "status") == "cancelled");
  CHECK(campaign(db, "camp_stop", "enqueued_count") == std::to_string(at_cancel));
  CHECK(email_jobs(db) == at_cancel);
}

TEST_CASE("a database connection lost mid-fan-out is a retry that resumes without duplicates",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tr", 4000);
  add_campaign(db, "tr", "camp_reset");
  auto host = start_host(config(db, batch(10)));
  const auto id = enqueue_campaign(db, "tr", "camp_reset");
  REQUIRE(eventually([&] { return campaign(db, "camp_reset", "enqueued_count") != "0"; }, 20s));
  // Cut the plugin's connection, as a PostgreSQL failover would; the host's
  // own connections are left alone.
  const long long cut = db.count(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
      "AND application_name = 'jobhost campaign_process'");
  const long long at_cut = std::stoll(campaign(db, "camp_reset", "enqueued_count"));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));
  INFO("connections cut: " << cut << ", enqueued when cut: " << at_cut);
  CHECK(cut >= 1);
  CHECK(at_cut < 4000);
  CHECK(db.field(id, "attempt_count") == "2");
  CHECK_THAT(db.scalar("SELECT log_message FROM jobhost.job_logs WHERE job_id = '" + id + "' AND attempt_number = 1"),
             Catch::StartsWith("campaign camp_reset: lost the connection to PostgreSQL"));
  CHECK(campaign(db, "camp_reset", "status") == "sent");
  CHECK(email_jobs(db) == 4000);
  CHECK(db.count("SELECT count(DISTINCT payload->>'recipient') FROM jobhost.jobs WHERE queue_name = 'email.send'") ==
        4000);
}

TEST_CASE("a campaign whose last attempt failed is marked failed, and a new job resumes it exactly",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tf", 3000);
  add_campaign(db, "tf", "camp_fail");
  CampaignOptions once = batch(10);
  once.max_attempts = 1;
  auto host = start_host(config(db, once));
  const auto first = enqueue_campaign(db, "tf", "camp_fail");
  REQUIRE(eventually([&] { return campaign(db, "camp_fail", "enqueued_count") != "0"; }, 20s));
  db.count("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
           "AND application_name = 'jobhost campaign_process'");
  REQUIRE(eventually([&] { return db.status(first) == "failed"; }, 20s));
  CHECK(campaign(db, "camp_fail", "status") == "failed");
  const long long partial = std::stoll(campaign(db, "camp_fail", "enqueued_count"));
  CHECK(partial < 3000);
  CHECK(email_jobs(db) == partial);

  const auto again = enqueue_campaign(db, "tf", "camp_fail");
  REQUIRE(eventually([&] { return db.status(again) == "completed"; }, 30s));
  CHECK(campaign(db, "camp_fail", "status") == "sent");
  CHECK(email_jobs(db) == 3000);
  CHECK(db.count("SELECT count(DISTINCT payload->>'recipient') FROM jobhost.jobs WHERE queue_name = 'email.send'") ==
        3000);
}

TEST_CASE("a sent or cancelled campaign is done already, and an empty list is sent with no jobs and completed",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "ts", 5);
  add_campaign(db, "ts", "camp_sent", "sent");
  add_campaign(db, "ts", "camp_cancelled", "cancelled");
  exec(db, "INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('empty_ts', 'ts', 'E')");
  add_campaign(db, "ts", "camp_empty", "scheduled", "empty_ts");
  auto host = start_host(config(db));
  const auto sent = enqueue_campaign(db, "ts", "camp_sent");
  const auto cancelled = enqueue_campaign(db, "ts", "camp_cancelled");
  const auto empty = enqueue_campaign(db, "ts", "camp_empty");
  REQUIRE(eventually([&] {
    return db.status(sent) == "completed" && db.status(cancelled) == "completed" && db.status(empty) == "completed";
  }, 20s));
  CHECK(campaign(db, "camp_sent", "status") == "sent");
  CHECK(campaign(db, "camp_cancelled", "status") == "cancelled");
  // An empty campaign's batch finishes when it closes: campaign.finish completes it at once.
  REQUIRE(eventually([&] { return campaign(db, "camp_empty", "status") == "completed"; }, 20s));
  CHECK(campaign(db, "camp_empty", "finished_at IS NOT NULL") == "t");
  CHECK(campaign(db, "camp_empty", "sent_count") == "0");
  CHECK(campaign(db, "camp_empty", "failed_count") == "0");
  CHECK(campaign(db, "camp_empty", "enqueued_count") == "0");
  CHECK(email_jobs(db) == 0);
}

TEST_CASE("an unknown campaign, or another tenant's, is a permanent failure naming it", "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "t1", 5);
  seed_tenant(db, "t2", 5);
  add_campaign(db, "t2", "camp_of_t2");
  auto host = start_host(config(db));
  const auto unknown = enqueue_campaign(db, "t1", "camp_nope");
  const auto foreign = enqueue_campaign(db, "t1", "camp_of_t2");
  REQUIRE(eventually([&] { return db.status(unknown) == "failed" && db.status(foreign) == "failed"; }, 20s));
  CHECK(db.field(unknown, "attempt_count") == "1");
  CHECK(db.field(unknown, "last_error_message") == "payload.campaign_id: no campaign 'camp_nope' for tenant 't1'");
  CHECK(db.field(foreign, "last_error_message") == "payload.campaign_id: no campaign 'camp_of_t2' for tenant 't1'");
  CHECK(campaign(db, "camp_of_t2", "status") == "scheduled");
  CHECK(email_jobs(db) == 0);
}

TEST_CASE("a campaign.process payload without a valid campaign_id or tenant_id is refused naming the field",
          "[campaign_process]") {
  TestDb db;
  auto host = start_host(config(db));
  const auto no_campaign = db.enqueue("campaign.process", R"({"tenant_id": "t1"})");
  const auto bad_tenant = db.enqueue("campaign.process", R"({"campaign_id": "c", "tenant_id": 7})");
  const auto empty_campaign = db.enqueue("campaign.process", R"({"campaign_id": "", "tenant_id": "t1"})");
  REQUIRE(eventually([&] {
    return db.status(no_campaign) == "failed" && db.status(bad_tenant) == "failed" &&
           db.status(empty_campaign) == "failed";
  }, 20s));
  CHECK(db.field(no_campaign, "last_error_message") == "invalid payload: payload.campaign_id: is required");
  CHECK(db.field(bad_tenant, "last_error_message") ==
        "invalid payload: payload.tenant_id: must be a string, not number");
  CHECK(db.field(empty_campaign, "last_error_message") == "invalid payload: payload.campaign_id: must not be empty");
}

TEST_CASE("an unreachable database makes campaign.process retry and then dead-letter with the cause",
          "[campaign_process]") {
  TestDb db;
  seed_tenant(db, "tp", 5);
  add_campaign(db, "tp", "camp_pg");
  // The plugin's own URL points at a port nothing listens on; the host's is fine.
  auto host = start_host(config(db, unreachable_database()));
  const auto id = enqueue_campaign(db, "tp", "camp_pg");
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 30s));
  CHECK(db.field(id, "attempt_count") == "2");
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("campaign camp_pg: lost the connection to PostgreSQL: "));
  CHECK(campaign(db, "camp_pg", "status") == "scheduled");
  CHECK(email_jobs(db) == 0);
}

TEST_CASE("a misspelt campaign_process setting is refused by --check-config, naming it", "[campaign_process]") {
  TestDb db;
  check_settings_refused(with_setting(config(db), "email_priorty: 10"),
                         "settings.email_priorty: unknown key (did you mean email_priority?)");
  check_settings_refused(with_setting(config(db), "page_size: 10"),
                         "settings.page_size: unknown key (known: database_url, db_pool_size, batch_size, email_priority)");
}
