// The bounce parser over the corpus (tests/corpus/*.eml, each with the
// expectation beside it in <name>.expect), and its limits, MIME decoding and
// path rules.
//
// An .expect file has one statement a line ("#" starts a comment):
//   format <reader>                       e.g. rfc3464, arf, exim, qmail
//   match <verp|message-id|-> <job-id|->  how the original was found
//   message_id <text|->
//   failure <recipient|-> <status|-> <reply code|-> <kind>   one a recipient, in order
//   error <text>                          parse_bounce must throw Malformed containing it
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "bounce_parser.hpp"
#include "inbound_file.hpp"
#include "mime.hpp"

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string dash(const std::string& s) { return s.empty() ? "-" : s; }

std::vector<fs::path> corpus() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(BOUNCE_CORPUS_DIR)) {
    if (e.path().extension() == ".eml" || e.path().extension() == ".json") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What the parser made of a file, in the .expect file's own words.
std::vector<std::string> describe(const bounce::Report& r) {
  std::vector<std::string> out{"format " + r.format, "match " + dash(r.matched_by) + " " + dash(r.job_id),
                               "message_id " + dash(r.message_id)};
  for (const auto& f : r.failures) {
    out.push_back("failure " + dash(f.recipient) + " " + dash(f.status) + " " +
                  (f.reply_code ? std::to_string(*f.reply_code) : "-") + " " + f.kind);
  }
  return out;
}

}  // namespace

TEST_CASE("corpus: every returned message gives the recipients, statuses and kinds its .expect says") {
  const auto files = corpus();
  REQUIRE(files.size() >= 25);
  for (const fs::path& file : files) {
    fs::path expect_file = file;
    expect_file.replace_extension(".expect");
    INFO(file.filename().string());
    REQUIRE(fs::exists(expect_file));
    std::vector<std::string> expected;
    std::string error;
    std::istringstream lines(slurp(expect_file));
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line[0] == '#') continue;
      if (line.rfind("error ", 0) == 0) error = line.substr(6);
      else expected.push_back(line);
    }
    const std::string raw = slurp(file);
    if (!error.empty()) {
      CHECK_THROWS_WITH(bounce::parse_bounce(raw), Catch::Contains(error));
      continue;
    }
    bounce::Report report;
    REQUIRE_NOTHROW(report = bounce::parse_bounce(raw));
    const auto got = describe(report);
    std::string diagnostics;
    for (const auto& f : report.failures) diagnostics += f.diagnostic + "\n";
    INFO("diagnostics:\n" << diagnostics);
    CHECK(got == expected);
  }
}

TEST_CASE("corpus: an auto-reply is never a bounce, whatever its text says") {
  size_t auto_replies = 0;
  for (const fs::path& file : corpus()) {
    if (file.filename().string().rfind("autoreply", 0) != 0) continue;
    ++auto_replies;
    INFO(file.filename().string());
    const bounce::Report r = bounce::parse_bounce(slurp(file));
    for (const auto& f : r.failures) CHECK(f.kind == "auto_reply");
  }
  CHECK(auto_replies >= 4);
}

TEST_CASE("parser: a policy refusal (5.7.1) in a DSN is soft, a full mailbox too") {
  const std::string dsn =
      "From: MAILER-DAEMON@mx.example.net\r\nTo: bounce+0b7a6c0e-9f0b-4c1e-8a55-3d7e1f2a9b10@bounces.example.com\r\n"
      "Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n"
      "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
      "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
      "Final-Recipient: rfc822; spam@example.org\r\nAction: failed\r\nStatus: 5.7.1\r\n"
      "Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam\r\n\r\n"
      "Final-Recipient: rfc822; full@example.org\r\nAction: failed\r\nStatus: 5.2.2\r\n"
      "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n"
      "--b--\r\n";
  const bounce::Report r = bounce::parse_bounce(dsn);
  REQUIRE(r.failures.size() == 2);
  CHECK(r.failures[0].kind == "soft");
  CHECK(r.failures[0].reply_code == 550);
  CHECK(r.failures[1].kind == "soft");
  CHECK(r.job_id == "0b7a6c0e-9f0b-4c1e-8a55-3d7e1f2a9b10");
  CHECK(r.matched_by == "verp");
}

TEST_CASE("parser: a report without its per-message group still gives its first recipient") {
  const bounce::Report r = bounce::parse_bounce(
      "From: MAILER-DAEMON@mx.example.net\nSubject: failed\n"
      "Content-Type: multipart/report; report-type=delivery-status; boundary=q\n\n"
      "--q\nContent-Type: message/delivery-status\n\n"
      "Final-Recipient: rfc822; first@example.org\nAction: failed\nStatus: 5.1.1\n\n"
      "Final-Recipient: rfc822; second@example.org\nAction: failed\nStatus: 5.2.2\n"
      "--q--\n");
  REQUIRE(r.failures.size() == 2);
  CHECK(r.failures[0].recipient == "first@example.org");
  CHECK(r.failures[0].kind == "hard");
  CHECK(r.failures[1].kind == "soft");
}

TEST_CASE("parser: malformed, truncated and binary input is refused with a reason, never a crash") {
  CHECK_THROWS_WITH(bounce::parse_bounce(""), Catch::Contains("empty"));
  CHECK_THROWS_WITH(bounce::parse_bounce(std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10)), Catch::Contains("NUL"));
  CHECK_THROWS_WITH(bounce::parse_bounce("just some words\nand more\n"), Catch::Contains("not a mail message"));
  CHECK_THROWS_WITH(bounce::parse_bounce("From: a@b.example\r\nSubject: cut"), Catch::Contains("truncated"));
  CHECK_THROWS_WITH(bounce::parse_bounce("{\"not\": \"ses\"}"), Catch::Contains("not an Amazon SES"));
  CHECK_THROWS_WITH(bounce::parse_bounce(std::string(100000, '[')), Catch::Contains("nested deeper"));
  // Random bytes (no NUL) never crash: refused, or read as some message.
  uint32_t seed = 12345;
  for (int round = 0; round < 300; ++round) {
    std::string junk;
    const size_t n = 1 + round * 37 % 3000;
    for (size_t i = 0; i < n; ++i) {
      seed = seed * 1103515245u + 12345u;
      char c = static_cast<char>((seed >> 16) & 0xFF);
      if (c == 0) c = '\n';
      junk += c;
    }
    if (round % 3 == 0) junk = "From: x@y.example\nContent-Type: multipart/report; boundary=z\n\n--z\n" + junk;
    try {
      (void)bounce::parse_bounce(junk);
    } catch (const bounce::Malformed&) {
    }
  }
}

TEST_CASE("parser: every truncation of a real DSN is refused or read, never a crash") {
  const std::string dsn = slurp(fs::path(BOUNCE_CORPUS_DIR) / "postfix_dsn_user_unknown.eml");
  REQUIRE(dsn.size() > 500);
  size_t refused = 0;
  for (size_t cut = 1; cut < dsn.size(); cut += 7) {
    try {
      (void)bounce::parse_bounce(std::string_view(dsn).substr(0, cut));
    } catch (const bounce::Malformed& e) {
      ++refused;
      CHECK(std::string(e.what()).size() > 10);
    }
  }
  CHECK(refused > 0);
  // Cut inside the report's own multipart: the reason says so.
  CHECK_THROWS_WITH(bounce::parse_bounce(std::string_view(dsn).substr(0, dsn.find("Final-Recipient"))),
                    Catch::Contains("truncated"));
}

TEST_CASE("parser: limits on header bytes, parts and depth are enforced") {
  bounce::Limits small;
  small.max_header_bytes = 2048;
  small.max_parts = 10;
  small.max_depth = 3;
  const std::string big_header = "From: a@b.example\r\nX-Long: " + std::string(5000, 'x') + "\r\n\r\nbody\r\n";
  CHECK_THROWS_WITH(bounce::parse_bounce(big_header, small), Catch::Contains("max_header_bytes"));
  std::string many = "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n";
  for (int i = 0; i < 20; ++i) many += "--q\r\nContent-Type: text/plain\r\n\r\npart\r\n";
  many += "--q--\r\n";
  CHECK_THROWS_WITH(bounce::parse_bounce(many, small), Catch::Contains("max_parts"));
  std::string deep = "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=d0\r\n\r\n";
  for (int i = 1; i < 6; ++i) {
    deep += "--d" + std::to_string(i - 1) + "\r\nContent-Type: multipart/mixed; boundary=d" + std::to_string(i) + "\r\n\r\n";
  }
  for (int i = 5; i >= 0; --i) deep += "--d" + std::to_string(i) + "--\r\n";
  CHECK_THROWS_WITH(bounce::parse_bounce(deep, small), Catch::Contains("nested deeper"));
}

TEST_CASE("mime: base64, quoted-printable, encoded words and folded headers are undone") {
  CHECK(bounce::decode_base64("NTUwIDUuMS4x\r\nIFVzZXIgdW5rbm93bg==") == "550 5.1.1 User unknown");
  CHECK(bounce::decode_quoted_printable("Status: 5.1.1=\r\n (bad)=3D=\nx=ZZ") == "Status: 5.1.1 (bad)=x=ZZ");
  CHECK(bounce::decode_words("=?UTF-8?Q?Automatische_Antwort:?= =?utf-8?B?IGhp?=") == "Automatische Antwort: hi");
  const bounce::Part p = bounce::parse_message(
      "Subject: a\r\n very\r\n\tlong one\r\nContent-Type: text/plain;\r\n charset=\"us-ascii\"\r\n\r\nx");
  CHECK(p.headers.get("subject") == "a very\tlong one");
  CHECK(p.params.at("charset") == "us-ascii");
}

TEST_CASE("inbound files: payload paths are confined under the root, sizes capped") {
  const fs::path base = fs::temp_directory_path() / ("bounce-paths-" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base / "root" / "new");
  const fs::path root = fs::canonical(base / "root");
  std::ofstream(base / "secret") << "From: a@b.example\r\n\r\nsecret\r\n";
  std::ofstream(root / "new" / "ok") << "From: a@b.example\r\n\r\nhello\r\n";
  fs::create_symlink(base / "secret", root / "new" / "escape");
  fs::create_symlink(root / "new" / "ok", root / "new" / "inside");
  CHECK(bounce::confined_path(root, "new/ok") == root / "new" / "ok");
  CHECK(bounce::confined_path(root, "new/inside") == root / "new" / "ok");
  CHECK_FALSE(bounce::confined_path(root, "new/missing"));
  CHECK_THROWS_WITH(bounce::confined_path(root, "../secret"), Catch::Contains("'..'"));
  CHECK_THROWS_WITH(bounce::confined_path(root, "new/../../secret"), Catch::Contains("'..'"));
  CHECK_THROWS_WITH(bounce::confined_path(root, (base / "secret").string()), Catch::Contains("absolute"));
  CHECK_THROWS_WITH(bounce::confined_path(root, "new/escape"), Catch::Contains("outside"));
  CHECK_THROWS_WITH(bounce::confined_path(root, "new"), Catch::Contains("not a regular file"));
  CHECK(bounce::read_capped(root / "new" / "ok", 1024).find("hello") != std::string::npos);
  CHECK_THROWS_WITH(bounce::read_capped(root / "new" / "ok", 10), Catch::Contains("max_message_bytes"));
  fs::remove_all(base);
}
