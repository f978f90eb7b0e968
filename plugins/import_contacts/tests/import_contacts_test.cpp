// import.contacts end to end: CSV files under the import root and over HTTP
// from a loopback server (cpp-httplib), through a real host.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>
#include <httplib.h>

#include "harness.hpp"
#include "proxy_trap.hpp"
#include "settings_check.hpp"

using namespace jobhost::test;
namespace fs = std::filesystem;

namespace {

struct Root {
  fs::path path;
  explicit Root(const std::string& tag) : path(fs::temp_directory_path() / (tag + "-imports")) {
    fs::create_directories(path);
    path = fs::canonical(path);
  }
  ~Root() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name, std::ios::binary) << text;
    return "file://" + (path / name).string();
  }
};

std::string config(TestDb& db, const Root& root, bool allow_loopback = true) {
  HostOptions o;
  o.extra_yaml = "  - name: import_contacts\n"
                 "    library: " + plugin_dir() + "/libimport_contacts.so\n"
                 "    job_types: [import.contacts]\n"
                 "    concurrency: { min: 1, max: 2 }\n"
                 "    retry: { max_attempts: 3, base_ms: 50, max_ms: 200 }\n"
                 "    timeout_ms: 30000\n"
                 "    settings:\n"
                 "      database_url: \"" + db.url() + "\"\n"
                 "      import_root: \"" + root.path.string() + "\"\n"
                 "      batch_size: 3\n"
                 "      http_timeout_ms: 1500\n" +
                 (allow_loopback ? "      allow_cidrs: [\"127.0.0.0/8\"]\n" : "");
  return write_config(db, o, "import");
}

void seed(TestDb& db) {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.contact_lists (id, tenant_id, name) VALUES ('l1', 't1', 'Main'), ('l2', 't2', 'Other') RETURNING 1");
  // t2 already has the address the t1 import brings: it must stay untouched.
  db.scalar("INSERT INTO app.contacts (tenant_id, email, name) VALUES ('t2', 'ann@example.com', 'Not Ann') RETURNING 1");
}

std::string import(TestDb& db, const std::string& url, const std::string& list = "l1", bool header = true) {
  return db.enqueue("import.contacts", R"({"tenant_id": "t1", "list_id": ")" + list + R"(", "file_url": ")" + url +
                                           R"(", "has_header": )" + (header ? "true" : "false") +
                                           R"(, "mapping": {"col_0": "email", "col_1": "name", "col_2": "company"}})");
}

const std::string kCsv =
    "\xEF\xBB\xBF" "email,name,company\r\n"
    "Ann@Example.com,Ann,\"Acme, Inc.\"\r\n"           // line 2: normalised, comma in quotes
    "bob@example.com,\"Bob \"\"B\"\" Jones\",Beta\r\n"  // line 3: escaped quotes
    "not-an-email,Nobody,X\r\n"                         // line 4: rejected
    "carl@example.com,\"Carl\nSecond Line\",Gamma\r\n"  // line 5-6: a line break in a field
    ",Empty,Y\r\n"                                      // line 7: rejected (no email)
    "dora@example.com,Dora\r\n"                         // line 8: no company column
    "\"open@example.com,Broken\n";                      // line 9: never closed

}  // namespace

TEST_CASE("an import maps, validates and upserts rows, counts the list, records rejections by line, notifies",
          "[import]") {
  TestDb db;
  seed(db);
  db.scalar("INSERT INTO app.webhook_endpoints (id, tenant_id, url, secret) VALUES "
            "('w1', 't1', 'https://hooks.example.com/x', 'secret-0123456789ab') RETURNING 1");
  Root root(db.prefix());
  auto host = start_host(config(db, root), "import");
  const std::string id = import(db, root.write("contacts.csv", kCsv));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  INFO(host->log());
  CHECK(db.scalar("SELECT string_agg(email || '|' || coalesce(name, '') || '|' || coalesce(attributes->>'company', ''), ';' ORDER BY email) "
                  "FROM app.contacts WHERE tenant_id = 't1'") ==
        "ann@example.com|Ann|Acme, Inc.;bob@example.com|Bob \"B\" Jones|Beta;carl@example.com|Carl\nSecond Line|Gamma;"
        "dora@example.com|Dora|");
  CHECK(db.scalar("SELECT name FROM app.contacts WHERE tenant_id = 't2'") == "Not Ann");
  CHECK(db.scalar("SELECT contact_count FROM app.contact_lists WHERE id = 'l1'") == "4");
  CHECK(db.scalar("SELECT rows_total || '/' || rows_accepted || '/' || rows_rejected || '/' || status FROM app.imports") ==
        "7/4/3/completed");
  CHECK(db.scalar("SELECT string_agg(line_number || ':' || reason, ' | ' ORDER BY line_number) FROM app.import_rejections") ==
        "4:email 'not-an-email' has no @ | 7:email '' is empty | "
        "9:a quoted field is never closed (the file ends inside it)");
  CHECK(db.count("SELECT count(*) FROM app.notifications WHERE kind = 'import.completed' AND subject_id = '" + id + "'") == 1);
  CHECK(db.scalar("SELECT payload->>'event' || ' ' || (payload->'data'->>'accepted') FROM jobhost.jobs "
                  "WHERE queue_name = 'webhook.dispatch'") == "import.completed 4");

  // The same file again (a new job): nothing doubles.
  const std::string again = import(db, root.write("contacts.csv", kCsv));
  REQUIRE(eventually([&] { return db.status(again) == "completed"; }, 20s));
  CHECK(db.scalar("SELECT contact_count FROM app.contact_lists WHERE id = 'l1'") == "4");
  CHECK(db.count("SELECT count(*) FROM app.contacts WHERE tenant_id = 't1'") == 4);
}

TEST_CASE("an import refuses files outside the import root, symlinks included, and bad payloads", "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  const fs::path outside = fs::temp_directory_path() / (db.prefix() + "-outside.csv");
  std::ofstream(outside) << "email\nx@example.com\n";
  fs::create_symlink(outside, root.path / "link.csv");
  auto host = start_host(config(db, root), "import");
  const std::string dotdot = import(db, "file://" + (root.path / ".." / outside.filename()).string());
  const std::string link = import(db, "file://" + (root.path / "link.csv").string());
  const std::string other_list = import(db, root.write("a.csv", "email\nx@example.com\n"), "l2");
  const std::string no_email = db.enqueue("import.contacts",
      R"({"tenant_id": "t1", "list_id": "l1", "file_url": "file:///x.csv", "mapping": {"col_0": "name"}})");
  const std::string bad_key = db.enqueue("import.contacts",
      R"({"tenant_id": "t1", "list_id": "l1", "file_url": "file:///x.csv", "mapping": {"first": "email"}})");
  const std::string ftp = db.enqueue("import.contacts",
      R"({"tenant_id": "t1", "list_id": "l1", "file_url": "ftp://x/y.csv", "mapping": {"col_0": "email"}})");
  REQUIRE(eventually([&] {
    for (const auto& j : {dotdot, link, other_list, no_email, bad_key, ftp}) {
      if (db.status(j) != "failed") return false;
    }
    return true;
  }, 20s));
  CHECK_THAT(db.field(dotdot, "last_error_message"), Catch::Contains("is outside the import root"));
  CHECK_THAT(db.field(link, "last_error_message"), Catch::Contains("is outside the import root"));
  CHECK(db.field(link, "attempt_count") == "1");
  CHECK_THAT(db.field(other_list, "last_error_message"), Catch::Contains("payload.list_id: no list 'l2' for tenant 't1'"));
  CHECK_THAT(db.field(no_email, "last_error_message"), Catch::Contains("payload.mapping: exactly one column must map to \"email\""));
  CHECK_THAT(db.field(bad_key, "last_error_message"), Catch::Contains("payload.mapping.first: keys are col_0"));
  CHECK_THAT(db.field(ftp, "last_error_message"), Catch::Contains("payload.file_url: must start with"));
  CHECK(db.count("SELECT count(*) FROM app.contacts WHERE tenant_id = 't1'") == 0);
  fs::remove(outside);
}

TEST_CASE("an import over HTTP: success, 404 for good, 500 then success, down, and too slow", "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  httplib::Server server;
  std::atomic<int> flaky_calls{0};
  server.Get("/ok.csv", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("email,name\nhttp1@example.com,H1\nhttp2@example.com,H2\n", "text/csv");
  });
  server.Get("/flaky.csv", [&](const httplib::Request&, httplib::Response& res) {
    if (flaky_calls++ == 0) {
      res.status = 500;
      // An error body is never imported, however CSV-like (more rows than a batch).
      res.set_content("email\nno1@example.com\nno2@example.com\nno3@example.com\nno4@example.com\n", "text/plain");
      return;
    }
    res.set_content("email\nflaky@example.com\n", "text/csv");
  });
  server.Get("/slow.csv", [](const httplib::Request&, httplib::Response& res) {
    std::this_thread::sleep_for(2500ms);  // past http_timeout_ms 1500
    res.set_content("email\nslow@example.com\n", "text/csv");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { server.listen_after_bind(); });
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  auto host = start_host(config(db, root), "import");

  const std::string ok = import(db, base + "/ok.csv");
  const std::string missing = import(db, base + "/missing.csv");
  const std::string flaky = import(db, base + "/flaky.csv");
  const std::string down = import(db, "http://127.0.0.1:1/none.csv");
  const std::string slow = import(db, base + "/slow.csv");
  REQUIRE(eventually([&] {
    return db.status(ok) == "completed" && db.status(missing) == "failed" && db.status(flaky) == "completed" &&
           db.status(down) == "failed" && db.status(slow) == "failed";
  }, 40s));
  server.stop();
  serving.join();
  CHECK(db.field(missing, "attempt_count") == "1");
  CHECK_THAT(db.field(missing, "last_error_message"), Catch::Contains("answered HTTP 404"));
  CHECK(db.field(flaky, "attempt_count") == "2");
  CHECK(db.field(down, "attempt_count") == "3");
  CHECK_THAT(db.field(down, "last_error_message"), Catch::Contains("Couldn't connect"));
  CHECK(db.field(slow, "attempt_count") == "3");
  CHECK_THAT(db.field(slow, "last_error_message"), Catch::Contains("Timeout"));
  CHECK(db.scalar("SELECT string_agg(email, ',' ORDER BY email) FROM app.contacts WHERE tenant_id = 't1'") ==
        "flaky@example.com,http1@example.com,http2@example.com");
  CHECK(db.scalar("SELECT status || ' ' || coalesce(error, '') FROM app.imports WHERE job_id = '" + missing + "'") ==
        "failed GET " + base + "/missing.csv answered HTTP 404");
}

TEST_CASE("an import from a private or loopback address is refused unless allow-listed", "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  auto host = start_host(config(db, root, false), "import");
  const std::string id = import(db, "http://127.0.0.1:9/contacts.csv");
  const std::string metadata = import(db, "http://169.254.169.254/latest/meta-data");
  REQUIRE(eventually([&] { return db.status(id) == "failed" && db.status(metadata) == "failed"; }, 20s));
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK_THAT(db.field(id, "last_error_message"),
             Catch::Contains("payload.file_url: refused to connect to 127.0.0.1 (127.0.0.1): a loopback address"));
  CHECK_THAT(db.field(metadata, "last_error_message"), Catch::Contains("(169.254.169.254): a link-local address"));
}

TEST_CASE("an import over HTTP ignores proxy variables: fetched directly, and the address guard still holds",
          "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  httplib::Server server;
  std::atomic<int> served{0};
  server.Get("/ok.csv", [&](const httplib::Request&, httplib::Response& res) {
    ++served;
    res.set_content("email,name\ndirect@example.com,D\n", "text/csv");
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { server.listen_after_bind(); });
  // A proxy would reach an address nobody checked (it resolves the name
  // itself), so a request through it routes around the guard.
  jobhost_plugins::testing::ProxyTrap proxy("email,name\nproxied@example.com,P\n");
  std::unique_ptr<Process> host;
  {
    const jobhost_plugins::testing::ProxyEnvironment env(proxy.url());
    host = start_host(config(db, root), "import");
  }
  const std::string ok = import(db, "http://127.0.0.1:" + std::to_string(port) + "/ok.csv");
  // 10.0.0.0/8 is not allow-listed: refused before any connection, proxy or not.
  const std::string refused = import(db, "http://10.1.2.3:8080/contacts.csv");
  REQUIRE(eventually([&] { return db.status(ok) == "completed" && db.status(refused) == "failed"; }, 20s));
  server.stop();
  serving.join();
  INFO(host->log());
  CHECK(proxy.connections() == 0);
  CHECK(served == 1);
  CHECK(db.scalar("SELECT string_agg(email, ',' ORDER BY email) FROM app.contacts WHERE tenant_id = 't1'") ==
        "direct@example.com");
  CHECK(db.field(refused, "attempt_count") == "1");
  CHECK_THAT(db.field(refused, "last_error_message"),
             Catch::Contains("payload.file_url: refused to connect to 10.1.2.3 (10.1.2.3): a private address"));
}

TEST_CASE("a misspelt import_contacts setting is refused by --check-config, naming it", "[import]") {
  TestDb db;
  Root root(db.prefix());
  // A typo here would otherwise leave the guard's allow list silently empty.
  check_settings_refused(with_setting(config(db, root, false), "allow_cidr: [\"10.0.0.0/8\"]"),
                         "settings.allow_cidr: unknown key (did you mean allow_cidrs?)");
  check_settings_refused(with_setting(config(db, root), "stall_secs: 5"),
                         "settings.stall_secs: unknown key (did you mean stall_seconds?)");
}
