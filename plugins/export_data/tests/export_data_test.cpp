// export.data through a real jobhost and PostgreSQL: the CSV file is checked
// against the database row by row, and against what app.exports recorded.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "harness.hpp"
#include "settings_check.hpp"

using namespace jobhost::test;
namespace fs = std::filesystem;

namespace {

using Rows = std::vector<std::vector<std::string>>;

// An export root of the test's own, removed afterwards.
struct ExportRoot {
  fs::path path;
  explicit ExportRoot(const TestDb& db)
      : path(fs::temp_directory_path() / ("jh-export-" + db.prefix())) {
    fs::create_directories(path);
  }
  ~ExportRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string config(const TestDb& db, const fs::path& root, int max_attempts = 3,
                   const std::string& database_url = "") {
  HostOptions o;
  o.extra_yaml = "  - name: export_data\n"
                 "    library: " + plugin_dir() + "/libexport_data.so\n"
                 "    job_types: [export.data]\n"
                 "    concurrency: { min: 1, max: 2 }\n"
                 "    retry: { max_attempts: " + std::to_string(max_attempts) + ", base_ms: 50, max_ms: 200 }\n"
                 "    settings:\n"
                 "      export_root: \"" + root.string() + "\"\n"
                 "      expire_after_hours: 48\n"
                 "      database_url: \"" + (database_url.empty() ? db.url() : database_url) + "\"\n"
                 "      db_pool_size: 2\n";
  return write_config(db, o);
}

void exec(TestDb& db, const std::string& sql) {
  pqxx::work tx(db.conn());
  tx.exec(sql);
  tx.commit();
}

Rows query(TestDb& db, const std::string& sql) {
  pqxx::nontransaction tx(db.conn());
  Rows out;
  for (const auto& row : tx.exec(sql)) {
    std::vector<std::string> fields;
    for (const auto& f : row) fields.push_back(f.is_null() ? "" : f.c_str());
    out.push_back(fields);
  }
  return out;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// RFC 4180, as PostgreSQL writes it: quoted fields may hold commas, doubled
// quotes and newlines; records end with \n.
Rows parse_csv(const std::string& text) {
  Rows rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
    } else {
      field += c;
    }
  }
  REQUIRE_FALSE(quoted);
  REQUIRE(field.empty());  // the file ends with a complete record
  return rows;
}

std::string sha256_hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  std::string out;
  char hex[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(hex, sizeof hex, "%02x", digest[i]);
    out += hex;
  }
  return out;
}

std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Tenants ta and tb with contacts whose fields exercise CSV quoting.
void seed_contacts(TestDb& db) {
  exec(db, R"SQL(
    INSERT INTO app.tenants (id, name) VALUES ('ta', 'A'), ('tb', 'B');
    INSERT INTO app.contacts (tenant_id, email, name, attributes) VALUES
      ('ta', 'plain@example.com', 'Plain Name', '{}'),
      ('ta', 'comma@example.com', 'Doe, Jane', '{"city": "Zürich", "note": "says \"hi\""}'),
      ('ta', 'quote@example.com', 'The "Boss"', '{"tags": ["a", "b"]}'),
      ('ta', 'newline@example.com', E'two\nlines', '{"n": 1}'),
      ('ta', 'nameless@example.com', NULL, '{}'),
      ('tb', 'secret@other.example', 'Other Tenant', '{"x": 1}');
    INSERT INTO app.contacts (tenant_id, email, name)
      SELECT 'ta', 'bulk' || g || '@example.com', 'Bulk ' || g FROM generate_series(1, 2000) g;
    INSERT INTO app.contacts (tenant_id, email, name)
      SELECT 'tb', 'tb' || g || '@other.example', 'B ' || g FROM generate_series(1, 100) g;
  )SQL");
}

const char* kContactsAsExported =
    "SELECT id::text, email, name, attributes::text, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM app.contacts c ";

std::string enqueue_export(TestDb& db, const nlohmann::json& payload) {
  return db.enqueue("export.data", payload.dump());
}

}  // namespace

TEST_CASE("a contacts export writes exactly the tenant's rows to a CSV file and records its size and sha256",
          "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  seed_contacts(db);
  exec(db, "INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
           "('whep_a', 'ta', 'https://hooks.example.com/a', 'a-secret-of-16-chars-or-more'),"
           "('whep_off', 'ta', 'https://hooks.example.com/off', 'a-secret-of-16-chars-or-more')");
  exec(db, "UPDATE app.webhook_endpoints SET active = false WHERE id = 'whep_off'");
  auto host = start_host(config(db, root.path));
  const auto id = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}});
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 30s));

  const auto rec = query(db, "SELECT status, path, rows::text, bytes::text, sha256, "
                             "(expires_at - finished_at = interval '48 hours')::text, kind "
                             "FROM app.exports WHERE job_id = '" + id + "'");
  REQUIRE(rec.size() == 1);
  CHECK(rec[0][0] == "completed");
  CHECK(rec[0][1] == "ta/contacts-" + id + ".csv");
  CHECK(rec[0][5] == "true");
  CHECK(rec[0][6] == "contacts");
  // The file and what was recorded about it agree; nothing else was left behind.
  CHECK(files_under(root.path) == std::vector<std::string>{"ta/contacts-" + id + ".csv"});
  const std::string text = read_file(root.path / rec[0][1]);
  CHECK(std::to_string(text.size()) == rec[0][3]);
  CHECK(sha256_hex(text) == rec[0][4]);

  // The content is the database's rows, in id order, and only tenant ta's.
  const Rows csv = parse_csv(text);
  REQUIRE(!csv.empty());
  CHECK(csv[0] == std::vector<std::string>{"id", "email", "name", "attributes", "created_at"});
  const Rows expected = query(db, std::string(kContactsAsExported) + "WHERE tenant_id = 'ta' ORDER BY c.id");
  CHECK(Rows(csv.begin() + 1, csv.end()) == expected);
  CHECK(rec[0][2] == std::to_string(expected.size()));
  CHECK(expected.size() == 2005);
  CHECK(text.find("other.example") == std::string::npos);
  CHECK(text.find("two\nlines") != std::string::npos);

  // Notified: one notification row and one webhook.dispatch per active endpoint.
  const auto note = nlohmann::json::parse(db.scalar(
      "SELECT data FROM app.notifications WHERE tenant_id = 'ta' AND kind = 'export.completed' AND subject_id = '" +
      id + "'"));
  CHECK(note["rows"] == 2005);
  CHECK(note["sha256"] == rec[0][4]);
  CHECK(note["path"] == rec[0][1]);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") == 1);
  const auto hook = nlohmann::json::parse(db.scalar("SELECT payload FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'"));
  CHECK(hook["endpoint_id"] == "whep_a");
  CHECK(hook["event"] == "export.completed");
  CHECK(hook["tenant_id"] == "ta");
  CHECK(hook["data"]["export_id"] == id);
}

TEST_CASE("a contacts export by list and an email_events export by campaign hold only those rows",
          "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  seed_contacts(db);
  exec(db, R"SQL(
    INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('list_a', 'ta', 'L'), ('list_b', 'tb', 'L'),
      ('o''brien\''); DROP TABLE app.contacts; --', 'ta', 'quoted');
    INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id)
      SELECT tenant_id, 'o''brien\''); DROP TABLE app.contacts; --', id FROM app.contacts WHERE email = 'comma@example.com';
    INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id)
      SELECT tenant_id, 'list_a', id FROM app.contacts WHERE tenant_id = 'ta' AND id % 3 = 0;
    INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id)
      SELECT tenant_id, 'list_b', id FROM app.contacts WHERE tenant_id = 'tb';
    INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) VALUES
      ('tpl_a', 'ta', 'T', 'a@example.com', 'S', 'h', 't'), ('tpl_b', 'tb', 'T', 'b@example.com', 'S', 'h', 't');
    INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id) VALUES
      ('camp_a1', 'ta', 'one', 'list_a', 'tpl_a'), ('camp_a2', 'ta', 'two', 'list_a', 'tpl_a'),
      ('camp_b', 'tb', 'b', 'list_b', 'tpl_b');
    INSERT INTO app.email_messages (tenant_id, job_id, campaign_id, template_id, recipient, subject, status, provider, message_id)
      SELECT t, gen_random_uuid(), c, tp, 'r' || g || '@example.com', 'Subject, "quoted" ' || g, 'sent', 'primary',
             '<m' || g || '@example.com>'
      FROM (VALUES ('ta', 'camp_a1', 'tpl_a'), ('ta', 'camp_a2', 'tpl_a'), ('tb', 'camp_b', 'tpl_b')) v(t, c, tp),
           generate_series(1, 40) g;
    INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail)
      SELECT tenant_id, id, campaign_id, recipient, 'sent', jsonb_build_object('relay', 'primary') FROM app.email_messages;
    INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event)
      SELECT tenant_id, id, campaign_id, recipient, 'opened' FROM app.email_messages WHERE id % 2 = 0;
  )SQL");
  auto host = start_host(config(db, root.path));
  const auto by_list = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}, {"list_id", "list_a"}});
  const auto by_campaign = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "email_events"}, {"campaign_id", "camp_a2"}});
  // A list id full of quotes reaches COPY as one literal.
  const auto quoted = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"},
                                          {"list_id", "o'brien\\'); DROP TABLE app.contacts; --"}});
  const auto all_events = enqueue_export(db, {{"tenant_id", "tb"}, {"kind", "email_events"}});
  REQUIRE(eventually([&] {
    return db.status(by_list) == "completed" && db.status(by_campaign) == "completed" &&
           db.status(all_events) == "completed" && db.status(quoted) == "completed";
  }, 30s));
  const Rows one = parse_csv(read_file(root.path / ("ta/contacts-" + quoted + ".csv")));
  REQUIRE(one.size() == 2);
  CHECK(one[1][1] == "comma@example.com");

  const Rows members = parse_csv(read_file(root.path / ("ta/contacts-" + by_list + ".csv")));
  const Rows expected_members = query(db, std::string(kContactsAsExported) +
      "WHERE tenant_id = 'ta' AND id IN (SELECT contact_id FROM app.contact_list_members WHERE list_id = 'list_a') "
      "ORDER BY c.id");
  CHECK(expected_members.size() > 600);
  CHECK(Rows(members.begin() + 1, members.end()) == expected_members);

  const std::string events_sql =
      "SELECT e.id::text, to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), e.event, "
      "e.recipient, e.campaign_id, m.template_id, m.subject, m.status, m.provider, m.message_id, e.detail::text "
      "FROM app.email_events e JOIN app.email_messages m ON m.id = e.message_id ";
  const Rows events = parse_csv(read_file(root.path / ("ta/email_events-" + by_campaign + ".csv")));
  CHECK(events[0] == std::vector<std::string>{"event_id", "created_at", "event", "recipient", "campaign_id",
                                              "template_id", "subject", "message_status", "provider", "message_id",
                                              "detail"});
  const Rows expected_events = query(db, events_sql + "WHERE e.tenant_id = 'ta' AND e.campaign_id = 'camp_a2' ORDER BY e.id");
  CHECK(expected_events.size() >= 40);
  CHECK(Rows(events.begin() + 1, events.end()) == expected_events);
  CHECK(db.scalar("SELECT rows FROM app.exports WHERE job_id = '" + by_campaign + "'") ==
        std::to_string(expected_events.size()));

  const Rows tb_events = parse_csv(read_file(root.path / ("tb/email_events-" + all_events + ".csv")));
  CHECK(Rows(tb_events.begin() + 1, tb_events.end()) ==
        query(db, events_sql + "WHERE e.tenant_id = 'tb' ORDER BY e.id"));
  // No endpoint: a notification row, but no webhook job.
  CHECK(db.count("SELECT count(*) FROM app.notifications WHERE kind = 'export.completed'") == 4);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'webhook.dispatch'") == 0);
}

TEST_CASE("an export already completed is not redone, and temporary files of a crashed attempt are removed",
          "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  seed_contacts(db);
  const std::string done_id = "00000000-0000-4000-8000-000000000001";
  const std::string crashed_id = "00000000-0000-4000-8000-000000000002";
  // As a previous attempt would have left them: a recorded export, and a half-written temp file.
  exec(db, "INSERT INTO app.exports (job_id, tenant_id, kind, status, path, rows, bytes, sha256) VALUES ('" +
           done_id + "', 'ta', 'contacts', 'completed', 'ta/contacts-" + done_id + ".csv', 1, 2, 'recorded')");
  fs::create_directories(root.path / "ta");
  std::ofstream(root.path / "ta" / ("contacts-" + crashed_id + ".csv.tmp1")) << "id,email\n1,half";
  exec(db, "INSERT INTO jobhost.jobs (id, queue_name, payload) VALUES "
           "('" + done_id + "', 'export.data', '{\"tenant_id\": \"ta\", \"kind\": \"contacts\"}'),"
           "('" + crashed_id + "', 'export.data', '{\"tenant_id\": \"ta\", \"kind\": \"contacts\"}')");
  auto host = start_host(config(db, root.path));
  REQUIRE(eventually([&] { return db.status(done_id) == "completed" && db.status(crashed_id) == "completed"; }, 30s));
  CHECK(db.scalar("SELECT sha256 FROM app.exports WHERE job_id = '" + done_id + "'") == "recorded");
  CHECK(files_under(root.path) == std::vector<std::string>{"ta/contacts-" + crashed_id + ".csv"});
  CHECK(db.scalar("SELECT rows FROM app.exports WHERE job_id = '" + crashed_id + "'") == "2005");
  CHECK(db.count("SELECT count(*) FROM app.notifications") == 1);
}

TEST_CASE("an export.data payload with a bad kind or tenant is refused naming the field", "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  auto host = start_host(config(db, root.path));
  const auto bad_kind = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "invoices"}});
  const auto no_tenant = enqueue_export(db, {{"kind", "contacts"}});
  const auto climbing = enqueue_export(db, {{"tenant_id", "../etc"}, {"kind", "contacts"}});
  const auto misplaced = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "email_events"}, {"list_id", "l"}});
  const auto numeric = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}, {"list_id", 5}});
  REQUIRE(eventually([&] {
    for (const auto& id : {bad_kind, no_tenant, climbing, misplaced, numeric}) {
      if (db.status(id) != "failed") return false;
    }
    return true;
  }, 20s));
  CHECK(db.field(bad_kind, "last_error_message") ==
        "invalid payload: payload.kind: must be \"contacts\" or \"email_events\", not \"invoices\"");
  CHECK(db.field(no_tenant, "last_error_message") == "invalid payload: payload.tenant_id: is required");
  CHECK_THAT(db.field(climbing, "last_error_message"), Catch::StartsWith("invalid payload: payload.tenant_id: may hold only"));
  CHECK(db.field(misplaced, "last_error_message") ==
        "invalid payload: payload.list_id: applies only to kind \"contacts\"");
  CHECK(db.field(numeric, "last_error_message") == "invalid payload: payload.list_id: must be a string, not number");
  CHECK(files_under(root.path).empty());
}

TEST_CASE("an export naming another tenant's list or campaign, or no tenant, fails naming the field",
          "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  seed_contacts(db);
  exec(db, "INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('list_b', 'tb', 'L');"
           "INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) "
           "VALUES ('tpl_b', 'tb', 'T', 'b@example.com', 'S', 'h', 't');"
           "INSERT INTO app.campaigns (id, tenant_id, name, list_id, template_id) VALUES ('camp_b', 'tb', 'b', 'list_b', 'tpl_b')");
  auto host = start_host(config(db, root.path));
  const auto list = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}, {"list_id", "list_b"}});
  const auto camp = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "email_events"}, {"campaign_id", "camp_b"}});
  const auto tenant = enqueue_export(db, {{"tenant_id", "tz"}, {"kind", "contacts"}});
  REQUIRE(eventually([&] {
    return db.status(list) == "failed" && db.status(camp) == "failed" && db.status(tenant) == "failed";
  }, 20s));
  CHECK(db.field(list, "attempt_count") == "1");
  CHECK(db.field(list, "last_error_message") == "payload.list_id: no list 'list_b' for tenant 'ta'");
  CHECK(db.field(camp, "last_error_message") == "payload.campaign_id: no campaign 'camp_b' for tenant 'ta'");
  CHECK(db.field(tenant, "last_error_message") == "payload.tenant_id: no tenant 'tz'");
  CHECK(files_under(root.path).empty());
  CHECK(db.count("SELECT count(*) FROM app.exports") == 0);
}

TEST_CASE("a missing export root stops the host at start, naming the setting", "[export_data]") {
  TestDb db;
  const fs::path missing = fs::temp_directory_path() / ("jh-export-missing-" + db.prefix());
  const auto [code, output] = run({bin_dir() + "/jobhost", "--config", config(db, missing)}, {}, 20s);
  CHECK(code != 0);
  CHECK_THAT(output, Catch::Contains("settings.export_root: '" + missing.string() + "' does not exist"));
  // --check-config creates each plugin's instance, so it catches bad settings too.
  const auto [check_code, check_output] = run({bin_dir() + "/jobhost", "--check-config", config(db, missing)}, {}, 20s);
  CHECK(check_code == 2);
  CHECK_THAT(check_output, Catch::Contains("settings.export_root: '" + missing.string() + "' does not exist"));
}

TEST_CASE("a misspelt export_data setting is refused by --check-config, naming it", "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  check_settings_refused(with_setting(config(db, root.path), "expire_after_hour: 24"),
                         "settings.expire_after_hour: unknown key (did you mean expire_after_hours?)");
}

TEST_CASE("an export root that vanished or cannot hold the tenant's folder fails the job with a clear message",
          "[export_data]") {
  TestDb db;
  seed_contacts(db);
  ExportRoot root(db);
  // tb's folder is blocked by a file of that name.
  std::ofstream(root.path / "tb") << "not a directory";
  auto host = start_host(config(db, root.path, 2));
  const auto blocked = enqueue_export(db, {{"tenant_id", "tb"}, {"kind", "contacts"}});
  REQUIRE(eventually([&] { return db.status(blocked) == "failed"; }, 20s));
  CHECK(db.field(blocked, "attempt_count") == "2");
  CHECK_THAT(db.field(blocked, "last_error_message"),
             Catch::Contains("export_root: cannot create directory '" + (root.path / "tb").string() + "'"));
  CHECK(db.scalar("SELECT status || ': ' || error FROM app.exports WHERE job_id = '" + blocked + "'") ==
        "failed: export_root: cannot create directory '" + (root.path / "tb").string() +
            "': a file of that name is in the way");

  fs::remove_all(root.path);
  const auto vanished = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}});
  REQUIRE(eventually([&] { return db.status(vanished) == "failed"; }, 20s));
  CHECK_THAT(db.field(vanished, "last_error_message"),
             Catch::Contains("settings.export_root: '" + fs::weakly_canonical(root.path).string() +
                             "' is not a directory any more"));
  CHECK_FALSE(fs::exists(root.path));  // not silently recreated
}

TEST_CASE("an export whose database is unreachable is retried, then dead-lettered with the cause",
          "[export_data]") {
  TestDb db;
  ExportRoot root(db);
  seed_contacts(db);
  auto host = start_host(config(db, root.path, 2, "postgresql://postgres@127.0.0.1:1/none"));
  const auto id = enqueue_export(db, {{"tenant_id", "ta"}, {"kind", "contacts"}});
  REQUIRE(eventually([&] { return db.status(id) == "failed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "2");
  CHECK_THAT(db.field(id, "last_error_message"), Catch::Contains("127.0.0.1"));
  CHECK(files_under(root.path).empty());
}
