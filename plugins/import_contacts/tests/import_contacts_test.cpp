// import.contacts end to end: CSV files under the import root and over HTTP
// from a loopback server (cpp-httplib), through a real host.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
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
                 "      max_field_bytes: 200\n"
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

// extra: more payload fields, e.g. R"(, "encoding": "utf-16")".
std::string import(TestDb& db, const std::string& url, const std::string& list = "l1", bool header = true,
                   const std::string& extra = "") {
  return db.enqueue("import.contacts", R"({"tenant_id": "t1", "list_id": ")" + list + R"(", "file_url": ")" + url +
                                           R"(", "has_header": )" + (header ? "true" : "false") + extra +
                                           R"(, "mapping": {"col_0": "email", "col_1": "name", "col_2": "company"}})");
}

std::string run(const std::string& command) {
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  return command;
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
  const std::string missing = import(db, "file://" + (root.path / "nope.csv").string());
  const std::string bad_encoding = import(db, root.write("b.csv", "email\n"), "l1", true, R"(, "encoding": "latin-9")");
  const std::string bad_delimiter = import(db, root.write("b.csv", "email\n"), "l1", true, R"(, "delimiter": ":")");
  const std::string ftp = db.enqueue("import.contacts",
      R"({"tenant_id": "t1", "list_id": "l1", "file_url": "ftp://x/y.csv", "mapping": {"col_0": "email"}})");
  REQUIRE(eventually([&] {
    for (const auto& j : {dotdot, link, other_list, no_email, bad_key, ftp, missing, bad_encoding, bad_delimiter}) {
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
  CHECK_THAT(db.field(bad_encoding, "last_error_message"),
             Catch::Contains("payload.encoding: 'latin-9' is not utf-8, windows-1252, iso-8859-1 or utf-16"));
  CHECK_THAT(db.field(bad_delimiter, "last_error_message"), Catch::Contains("payload.delimiter: ':' is not"));
  // A file that is not there: failed for good, and the import's row says why.
  CHECK(db.field(missing, "attempt_count") == "1");
  CHECK(db.scalar("SELECT status || ' ' || error FROM app.imports WHERE job_id = '" + missing + "'") ==
        "failed payload.file_url: cannot open " + (root.path / "nope.csv").string() + ": No such file or directory");
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
  // Unreachable after every attempt: failed, with the reason; a retry that
  // succeeded leaves no error behind.
  CHECK_THAT(db.scalar("SELECT status || ' ' || coalesce(error, '') FROM app.imports WHERE job_id = '" + down + "'"),
             Catch::StartsWith("failed GET http://127.0.0.1:1/none.csv failed: Couldn't connect"));
  CHECK(db.scalar("SELECT status || ' ' || coalesce(error, '-') || ' ' || rows_total FROM app.imports WHERE job_id = '" +
                  flaky + "'") == "completed - 1");
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

TEST_CASE("one bad row is one rejected row: a 2,500-row file with a Windows-1252 byte on line 1,700 completes",
          "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  // Physical lines as written, with CRLF, one lone CR and one quoted line break.
  std::ostringstream csv;
  csv << "email,name,company\r\n";
  std::vector<std::string> expected;
  int line = 2;
  for (int r = 1; r <= 2500; ++r, ++line) {
    std::string email = "user" + std::to_string(r) + "@example.com", name = "User " + std::to_string(r);
    if (line == 1700) {
      name = "Caf\xE9";  // as a spreadsheet saved in Windows-1252 writes it
      expected.push_back("1700:field 2 is not valid utf-8 (byte 0xE9 at offset 3)");
    } else if (line == 1800) {
      name = std::string("n\0l", 3);
      expected.push_back("1800:field 2 holds a NUL byte");
    } else if (line == 1900) {
      name = std::string(201, 'n');
      expected.push_back("1900:field 2 is longer than 200 bytes (max_field_bytes)");
    } else if (r == 2400) {
      email = "broken";
      expected.push_back(std::to_string(line) + ":email 'broken' has no @");
    }
    if (line == 2100) {
      csv << email << ",\"Two\r\nLines\",X\r\n";
      ++line;
    } else {
      csv << email << "," << name << ",X" << (line == 2000 ? "\r" : "\r\n");
    }
  }
  auto host = start_host(config(db, root), "import");
  const std::string id = import(db, root.write("big.csv", csv.str()));
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 60s));
  INFO(host->log());
  CHECK(db.field(id, "attempt_count") == "1");
  CHECK(db.scalar("SELECT rows_total || '/' || rows_accepted || '/' || rows_rejected || '/' || status || '/' || "
                  "encoding || '/' || delimiter FROM app.imports") == "2500/2496/4/completed/utf-8/,");
  std::string joined;
  for (const auto& e : expected) joined += (joined.empty() ? "" : " | ") + e;
  CHECK(db.scalar("SELECT string_agg(line_number || ':' || reason, ' | ' ORDER BY line_number) FROM app.import_rejections") ==
        joined);
  // The bad byte is kept for the operator as U+FFFD.
  CHECK(db.scalar("SELECT raw FROM app.import_rejections WHERE line_number = 1700") == "user1699@example.com,Caf\uFFFD,X");
  CHECK(db.scalar("SELECT contact_count FROM app.contact_lists WHERE id = 'l1'") == "2496");
  CHECK(db.scalar("SELECT name FROM app.contacts WHERE email = 'user2099@example.com'") == "Two\r\nLines");
  CHECK(db.scalar("SELECT name FROM app.contacts WHERE email = 'user2500@example.com'") == "User 2500");
}

TEST_CASE("real files: LibreOffice's Windows-1252 CSV with semicolons, and Python's csv in UTF-16", "[import]") {
  TestDb db;
  seed(db);
  Root root(db.prefix());
  // A flat ODS spreadsheet, saved as CSV by LibreOffice with the options a
  // European user's export has: field separator 59 (';'), text delimiter 34
  // ('"'), character set 1 (Windows-1252).
  std::ofstream(root.path / "contacts.fods") << R"(<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
<office:body><office:spreadsheet><table:table table:name="Contacts">)" +
      [] {
        std::string rows;
        for (const auto& r : std::vector<std::vector<std::string>>{{"email", "name", "company"},
                                                                   {"zoe@example.com", "Zoë Café", "Müller; Söhne €"},
                                                                   {"not-an-email", "Nobody", "X"},
                                                                   {"jan@example.com", "Jan Ångström", "Œuvre"}}) {
          rows += "<table:table-row>";
          for (const auto& c : r) rows += R"(<table:table-cell office:value-type="string"><text:p>)" + c + "</text:p></table:table-cell>";
          rows += "</table:table-row>\n";
        }
        return rows;
      }() + "</table:table></office:spreadsheet></office:body></office:document>\n";
  REQUIRE(std::system("command -v soffice >/dev/null") == 0);  // scripts/setup.sh installs libreoffice-calc-nogui
  run("cd '" + root.path.string() + "' && HOME='" + root.path.string() + "' soffice -env:UserInstallation=file://" +
      root.path.string() + "/lo-profile --headless --convert-to 'csv:Text - txt - csv (StarCalc):59,34,1,1' "
      "contacts.fods >lo.log 2>&1");
  std::ifstream lo(root.path / "contacts.csv", std::ios::binary);
  const std::string lo_bytes((std::istreambuf_iterator<char>(lo)), std::istreambuf_iterator<char>());
  INFO(lo_bytes);
  REQUIRE(lo_bytes.find("Zo\xEB Caf\xE9") != std::string::npos);  // Windows-1252, as asked
  // Python's csv module, UTF-16 with its BOM: a quoted comma and line break.
  run("python3 -c \"import csv, sys; w = csv.writer(open(sys.argv[1], 'w', encoding='utf-16', newline='')); "
      "w.writerow(['email', 'name', 'company']); w.writerow(['ute@example.com', 'Ute Ünal', 'A, B\\nC']); "
      "w.writerow(['kim@example.com', 'Kim 金', 'K'])\" '" + (root.path / "py16.csv").string() + "'");
  // Tab-separated, delimiter left to auto.
  const std::string tsv = root.write("tabs.tsv", "email\tname\tcompany\ntab@example.com\tT, Ab\tC;D\n");

  auto host = start_host(config(db, root), "import");
  const std::string url = "file://" + (root.path / "contacts.csv").string();
  const std::string semicolon = import(db, url, "l1", true, R"(, "encoding": "windows-1252", "delimiter": ";")");
  REQUIRE(eventually([&] { return db.status(semicolon) == "completed"; }, 20s));
  const std::string autodetect = import(db, url, "l1", true, R"(, "encoding": "windows-1252", "delimiter": "auto")");
  const std::string utf16 = import(db, "file://" + (root.path / "py16.csv").string(), "l1", true, R"(, "encoding": "utf-16")");
  // The payload says utf-8, the BOM says UTF-16: the BOM wins.
  const std::string bom = import(db, "file://" + (root.path / "py16.csv").string());
  const std::string tabs = import(db, tsv, "l1", true, R"(, "delimiter": "auto")");
  REQUIRE(eventually([&] {
    for (const auto& j : {autodetect, utf16, bom, tabs}) {
      if (db.status(j) != "completed") return false;
    }
    return true;
  }, 20s));
  INFO(host->log());
  CHECK(db.scalar("SELECT string_agg(email || '|' || name || '|' || (attributes->>'company'), ';' ORDER BY email) "
                  "FROM app.contacts WHERE tenant_id = 't1'") ==
        "jan@example.com|Jan Ångström|Œuvre;kim@example.com|Kim 金|K;tab@example.com|T, Ab|C;D;"
        "ute@example.com|Ute Ünal|A, B\nC;zoe@example.com|Zoë Café|Müller; Söhne €");
  const auto summary = [&](const std::string& id) {
    return db.scalar("SELECT rows_total || '/' || rows_accepted || '/' || encoding || '/' || delimiter FROM app.imports "
                     "WHERE job_id = '" + id + "'");
  };
  CHECK(summary(semicolon) == "3/2/windows-1252/;");
  CHECK(summary(autodetect) == "3/2/windows-1252/;");
  CHECK(summary(utf16) == "2/2/utf-16le/,");
  CHECK(summary(bom) == "2/2/utf-16le/,");
  CHECK(summary(tabs) == "1/1/utf-8/\\t");
  CHECK(db.scalar("SELECT string_agg(line_number || ':' || reason, ' | ') FROM app.import_rejections WHERE import_id = '" +
                  semicolon + "'") == "3:email 'not-an-email' has no @");
  CHECK_THAT(host->log(), Catch::Contains("delimiter auto: ';' chosen from the first line"));
  CHECK_THAT(host->log(), Catch::Contains("delimiter auto: '\\t' chosen from the first line"));
  CHECK_THAT(host->log(), Catch::Contains("the file's byte-order mark says utf-16le (payload.encoding: utf-8)"));
}
