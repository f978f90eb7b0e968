// email_send_fixture.hpp: what the email_send tests share: a host config with
// two relays (internal, then esp) and the pool's settings, the seeded tenants
// and templates, and helpers that take received messages apart.
#pragma once

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "smtp_sink.hpp"

namespace email_fixture {

using namespace jobhost::test;

struct Relays {
  int primary = 0, fallback = 0;
  int breaker_failures = 5;
  long open_ms = 30000;
  long timeout_ms = 2000;
  int max_attempts = 3;
  int workers = 1;
  std::string relay_keys = "";  // more keys for both relays, e.g. ", max_sessions: 2"
  // A relay's "try later" holds it back this long (flow control). 1 ms keeps
  // it out of the way of the tests of fail-over and circuit breakers; the
  // flow test sets its own.
  long deferral_hold_ms = 1;
  std::string extra_settings = "";  // more keys of settings:, each line indented by 6
};

inline std::string plugin_entry(TestDb& db, const Relays& r) {
  return "  - name: email_send\n"
         "    library: " + plugin_dir() + "/libemail_send.so\n"
         "    job_types: [email.send]\n"
         "    concurrency: { min: " + std::to_string(r.workers) + ", max: " + std::to_string(r.workers) + " }\n"
         "    retry: { max_attempts: " + std::to_string(r.max_attempts) + ", base_ms: 100, max_ms: 300 }\n"
         "    timeout_ms: 20000\n"
         "    settings:\n"
         "      database_url: \"" + db.url() + "\"\n"
         "      db_pool_size: 2\n"
         "      helo: jobhost.test\n"
         "      providers:\n"
         "        - { name: internal, url: \"smtp://127.0.0.1:" + std::to_string(r.primary) +
         "\", timeout_ms: " + std::to_string(r.timeout_ms) + r.relay_keys + " }\n"
         "        - { name: esp, url: \"smtp://127.0.0.1:" + std::to_string(r.fallback) +
         "\", timeout_ms: " + std::to_string(r.timeout_ms) + r.relay_keys + " }\n"
         "      circuit_breaker: { failures: " + std::to_string(r.breaker_failures) + ", open_ms: " +
         std::to_string(r.open_ms) + " }\n"
         "      limiters: { deferral_hold_ms: " + std::to_string(r.deferral_hold_ms) + " }\n" + r.extra_settings;
}

inline std::string config(TestDb& db, const Relays& r) {
  HostOptions o;
  o.extra_yaml = plugin_entry(db, r);
  return write_config(db, o, "email");
}

inline void seed(TestDb& db) {
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One'), ('t2', 'Two') RETURNING 1");
  db.scalar("INSERT INTO app.email_templates (id, tenant_id, name, from_email, subject, html_body, text_body) VALUES "
            "('tpl', 't1', 'Welcome', 'news@t1.example', 'Hello {{name}}', '<p>Hi {{ name }}!</p>', 'Hi {{name}}!'), "
            "('tpl-u', 't1', 'Unicode', 'news@t1.example', 'Grüße, {{ name }}: {{ n }} neue Nachrichten für dich', "
            "'<p>{{name}}</p>', '{{name}}') RETURNING 1");
  db.scalar("INSERT INTO app.suppressions (tenant_id, email, reason) VALUES ('t1', 'gone@example.com', 'hard bounce') "
            "RETURNING 1");
}

inline std::string send(TestDb& db, const std::string& to = "ann@example.com", const std::string& name = "<b>Ann & Co</b>",
                 const std::string& tenant = "t1") {
  return db.enqueue("email.send", R"({"recipient": ")" + to + R"(", "template_id": "tpl", "tenant_id": ")" + tenant +
                                      R"(", "variables": {"name": ")" + name + R"("}})");
}

inline bool completed(TestDb& db, const std::string& id) {
  return eventually([&] { return db.status(id) == "completed"; }, 20s);
}

// A port nobody listens on: a sink's, after it stopped.
inline int closed_port() {
  smtp::Sink s;
  const int port = s.port();
  s.stop();
  return port;
}

// The header block of a message, folded lines joined.
inline std::string header_block(const std::string& msg) {
  std::string h = msg.substr(0, msg.find("\r\n\r\n") + 2);
  return std::regex_replace(h, std::regex("\r\n[ \t]"), " ");
}

inline std::string header(const std::string& msg, const std::string& name) {
  const std::string h = header_block(msg);
  std::smatch m;
  if (std::regex_search(h, m, std::regex("(^|\r\n)" + name + ": ([^\r]*)\r\n"))) return m[2];
  return "";
}

inline std::string unbase64(const std::string& in) {
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

// RFC 2047 B-encoded words joined (the whitespace between them dropped).
inline std::string decode_words(const std::string& value) {
  std::string out;
  const std::regex word("=\\?UTF-8\\?B\\?([A-Za-z0-9+/=]*)\\?=");
  for (std::sregex_iterator it(value.begin(), value.end(), word), end; it != end; ++it) out += unbase64((*it)[1]);
  return out;
}

// The decoded body of the MIME part with this content type, checking its
// headers on the way.
inline std::string part(const std::string& msg, const std::string& type) {
  const std::string boundary = std::regex_replace(header(msg, "Content-Type"), std::regex(".*boundary=\"([^\"]+)\".*"), "$1");
  const auto start = msg.find("\r\n--" + boundary + "\r\nContent-Type: " + type + "; charset=UTF-8\r\n");
  REQUIRE(start != std::string::npos);
  const auto body = msg.find("\r\n\r\n", start) + 4;
  CHECK(msg.substr(start, body - start).find("Content-Transfer-Encoding: base64") != std::string::npos);
  const auto end = msg.find("\r\n--" + boundary, body);
  REQUIRE(end != std::string::npos);
  return unbase64(msg.substr(body, end - body));
}

inline size_t longest_line(const std::string& msg) {
  size_t longest = 0, at = 0;
  for (size_t end; (end = msg.find("\r\n", at)) != std::string::npos; at = end + 2) longest = std::max(longest, end - at);
  return longest;
}


}  // namespace email_fixture
