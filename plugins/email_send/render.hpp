// render.hpp: template rendering and the MIME message, pure functions.
//
// {{ name }} is replaced by the variable's value (strings as they are, numbers
// and booleans as JSON writes them). In the HTML part the value is
// HTML-escaped, so a contact named "<b>Ann</b>" cannot inject markup; the
// template's own HTML is left alone. A placeholder without a variable is an
// error naming it: a mail with "Hello {{name}}" in it must not go out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace mail {

struct MissingVariable : std::runtime_error {
  explicit MissingVariable(const std::string& name)
      : std::runtime_error("payload.variables." + name + ": missing, and the template uses {{" + name + "}}"),
        variable(name) {}
  std::string variable;
};

inline std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string render(const std::string& text, const nlohmann::json& vars, bool html) {
  std::string out;
  size_t at = 0;
  for (;;) {
    const size_t open = text.find("{{", at);
    if (open == std::string::npos) break;
    const size_t close = text.find("}}", open + 2);
    if (close == std::string::npos) break;
    std::string name = text.substr(open + 2, close - open - 2);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    out.append(text, at, open - at);
    if (!vars.contains(name)) throw MissingVariable(name);
    const nlohmann::json& v = vars[name];
    const std::string value = v.is_string() ? v.get<std::string>() : v.is_null() ? "" : v.dump();
    out += html ? html_escape(value) : value;
    at = close + 2;
  }
  out.append(text, at, std::string::npos);
  return out;
}

inline std::string base64(const std::string& in, size_t line = 76) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t col = 0;
  for (size_t i = 0; i < in.size(); i += 3) {
    const uint32_t n = (static_cast<uint8_t>(in[i]) << 16) |
                       (i + 1 < in.size() ? static_cast<uint8_t>(in[i + 1]) << 8 : 0) |
                       (i + 2 < in.size() ? static_cast<uint8_t>(in[i + 2]) : 0);
    const char quad[4] = {table[(n >> 18) & 63], table[(n >> 12) & 63], i + 1 < in.size() ? table[(n >> 6) & 63] : '=',
                          i + 2 < in.size() ? table[n & 63] : '='};
    for (const char c : quad) {
      if (line > 0 && col == line) {
        out += "\r\n";
        col = 0;
      }
      out += c;
      ++col;
    }
  }
  return out;
}

// A header value. Control characters (a variable carrying CR LF must not add
// a header) become spaces. Plain ASCII that fits a line stays as it is; the
// rest becomes RFC 2047 encoded-words of at most 39 bytes each (64 characters
// encoded, so "Subject: " and the word fit in 76), cut between UTF-8
// characters and folded onto continuation lines.
inline std::string header_text(std::string s) {
  bool plain = s.size() <= 900;
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = ' ';
    plain = plain && u < 0x80;
  }
  if (plain) return s;
  std::string out;
  for (size_t at = 0; at < s.size();) {
    size_t end = std::min(at + 39, s.size());
    while (end < s.size() && end > at && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
    if (end == at) end = std::min(at + 39, s.size());  // not UTF-8: cut anywhere
    if (!out.empty()) out += "\r\n ";
    out += "=?UTF-8?B?" + base64(s.substr(at, end - at), 0) + "?=";
    at = end;
  }
  return out;
}

struct Rendered {
  std::string subject, text, html;
};

// The whole message, CRLF line ends, ready for SMTP DATA. extra_headers:
// whole header fields (each ending CR LF) put before MIME-Version.
inline std::string mime(const std::string& from, const std::string& to, const std::string& message_id,
                        const Rendered& r, std::time_t now, const std::string& extra_headers = "") {
  char date[64];
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  const std::string boundary = "=_jobhost_" + message_id.substr(1, message_id.find('@') - 1);
  std::string m;
  m += "From: " + from + "\r\n";
  m += "To: " + to + "\r\n";
  m += "Subject: " + header_text(r.subject) + "\r\n";
  m += "Date: " + std::string(date) + "\r\n";
  m += "Message-ID: " + message_id + "\r\n";
  m += extra_headers;
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/alternative;\r\n boundary=\"" + boundary + "\"\r\n";
  m += "\r\n";
  m += "--" + boundary + "\r\n";
  m += "Content-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n";
  m += base64(r.text) + "\r\n";
  m += "--" + boundary + "\r\n";
  m += "Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n";
  m += base64(r.html) + "\r\n";
  m += "--" + boundary + "--\r\n";
  return m;
}

}  // namespace mail
