// smtp_protocol.hpp: the pure parts of an SMTP client, no I/O: parsing a
// (multi-line) reply, reading the EHLO capabilities, dot-stuffing a message
// for DATA, and the commands of one transaction as they go on the wire.
// Unit-tested on their own (tests/smtp_protocol_test.cpp).
#pragma once

#include <cctype>
#include <stdexcept>
#include <string>
#include <string_view>

namespace smtp_client {

struct ProtocolError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One reply: its code, and its last line (what an error message quotes).
struct Reply {
  int code = 0;
  std::string line;  // the last line, code included, without CR LF
  bool positive() const { return code >= 200 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500 && code < 600; }
};

constexpr size_t kMaxReplyLine = 4096;  // RFC 5321 allows 512; a relay sending more is not an SMTP relay

// Parses one complete reply at the front of `in` into `out` and returns how
// many bytes it took, or 0 when the reply is not complete yet. Throws
// ProtocolError on anything that is not "DDD-text" / "DDD text" lines.
inline size_t parse_reply(std::string_view in, Reply& out) {
  size_t at = 0;
  for (;;) {
    const size_t end = in.find("\r\n", at);
    if (end == std::string_view::npos) {
      if (in.size() - at > kMaxReplyLine) throw ProtocolError("reply line longer than 4096 bytes");
      return 0;
    }
    const std::string_view line = in.substr(at, end - at);
    if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
        !std::isdigit(static_cast<unsigned char>(line[1])) || !std::isdigit(static_cast<unsigned char>(line[2])) ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      throw ProtocolError("not an SMTP reply: \"" + std::string(line.substr(0, 80)) + "\"");
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (out.code != 0 && code != out.code && at != 0) throw ProtocolError("reply lines with different codes");
    out.code = code;
    at = end + 2;
    if (line.size() == 3 || line[3] == ' ') {
      out.line = std::string(line);
      return at;
    }
  }
}

// What EHLO said the relay can do.
struct Capabilities {
  bool pipelining = false;
  bool starttls = false;
  bool auth_plain = false;
  bool auth_login = false;
  size_t size_limit = 0;  // 0: none announced
};

inline std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The EHLO reply as received (every line, CR LF separated).
inline Capabilities parse_ehlo(std::string_view reply) {
  Capabilities caps;
  size_t at = 0;
  bool first = true;
  while (at < reply.size()) {
    size_t end = reply.find("\r\n", at);
    if (end == std::string_view::npos) end = reply.size();
    const std::string_view line = reply.substr(at, end - at);
    at = end + 2;
    if (first) {  // the first line is the relay's name, not a keyword
      first = false;
      continue;
    }
    if (line.size() <= 4) continue;
    const std::string kw = upper(line.substr(4));
    if (kw == "PIPELINING") caps.pipelining = true;
    if (kw == "STARTTLS") caps.starttls = true;
    if (kw.rfind("AUTH", 0) == 0 && (kw.size() == 4 || kw[4] == ' ' || kw[4] == '=')) {
      const std::string methods = " " + kw.substr(std::min<size_t>(kw.size(), 5)) + " ";
      if (methods.find(" PLAIN ") != std::string::npos) caps.auth_plain = true;
      if (methods.find(" LOGIN ") != std::string::npos) caps.auth_login = true;
    }
    if (kw.rfind("SIZE ", 0) == 0) {
      try {
        caps.size_limit = std::stoul(kw.substr(5));
      } catch (const std::exception&) {
        caps.size_limit = 0;
      }
    }
  }
  return caps;
}

// The message (CR LF line ends) as DATA sends it: a leading dot doubled on
// every line, a CR LF added when the last line lacks one, and the final
// CR LF . CR LF.
inline std::string dot_stuff(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 64 + 8);
  bool line_start = true;
  for (const char c : message) {
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n';
  }
  if (!message.empty() && !line_start) out += "\r\n";
  out += ".\r\n";
  return out;
}

// Addresses go between angle brackets; a CR, LF or angle bracket in one would
// let a payload add commands, so those are refused here whatever the caller
// validated before.
inline bool safe_address(std::string_view a) { return a.find_first_of("\r\n<>") == std::string_view::npos; }

}  // namespace smtp_client
