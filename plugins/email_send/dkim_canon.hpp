// dkim_canon.hpp: RFC 6376 "relaxed" canonicalisation (section 3.4.2 for
// headers, 3.4.4 for the body) and picking the header fields to sign, pure
// functions on a message with CR LF line ends. Unit-tested on their own;
// dkim.hpp signs with them.
#pragma once

#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dkim {

inline bool wsp(char c) { return c == ' ' || c == '\t'; }

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "Name:value" as it appears (folding included, no final CR LF) -> "name:value\r\n":
// the name lower case, the value unfolded, runs of WSP made one space, WSP
// at its ends and around the colon removed.
inline std::string relaxed_header(std::string_view field) {
  const size_t colon = field.find(':');
  std::string name(field.substr(0, colon == std::string_view::npos ? field.size() : colon));
  while (!name.empty() && wsp(name.back())) name.pop_back();
  std::string out = lower(name) + ":";
  if (colon == std::string_view::npos) return out + "\r\n";
  bool pending_space = false, started = false;
  for (const char c : field.substr(colon + 1)) {
    if (c == '\r' || c == '\n') continue;  // unfold
    if (wsp(c)) {
      pending_space = started;
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    started = true;
    out += c;
  }
  return out + "\r\n";
}

// The body (what follows the blank line) -> its relaxed form: WSP runs one
// space, WSP at line ends removed, empty lines at the end removed, and a
// non-empty body ending in CR LF.
inline std::string relaxed_body(std::string_view body) {
  std::string out;
  out.reserve(body.size());
  size_t at = 0;
  while (at < body.size()) {
    size_t end = body.find("\r\n", at);
    const bool last = end == std::string_view::npos;
    if (last) end = body.size();
    std::string line;
    bool pending_space = false;
    for (const char c : body.substr(at, end - at)) {
      if (wsp(c)) {
        pending_space = true;
        continue;
      }
      if (pending_space) line += ' ';
      pending_space = false;
      line += c;
    }
    out += line + "\r\n";
    at = last ? body.size() : end + 2;
  }
  while (out.size() >= 4 && out.compare(out.size() - 4, 4, "\r\n\r\n") == 0) out.resize(out.size() - 2);
  if (out == "\r\n") out.clear();
  return out;
}

// A message's header fields (each with its folding, without the final CR LF)
// and its body. A message without a blank line is all header.
struct Split {
  std::vector<std::string_view> fields;
  std::string_view body;
};

inline Split split(std::string_view message) {
  Split s;
  const size_t blank = message.find("\r\n\r\n");
  const std::string_view head = blank == std::string_view::npos ? message : message.substr(0, blank + 2);
  if (blank != std::string_view::npos) s.body = message.substr(blank + 4);
  size_t at = 0, start = 0, stop = 0;
  bool open = false;
  while (at < head.size()) {
    size_t end = head.find("\r\n", at);
    if (end == std::string_view::npos) end = head.size();
    if (!(open && wsp(head[at]))) {  // a line starting with WSP continues the field
      if (open) s.fields.push_back(head.substr(start, stop - start));
      start = at;
      open = true;
    }
    stop = end;
    at = end + 2;
  }
  if (open) s.fields.push_back(head.substr(start, stop - start));
  return s;
}

// The header names DESIGN §11 asks to sign, in signing order; each is signed
// when the message has it (its last occurrence, RFC 6376 5.4.2).
inline const std::vector<std::string>& signed_header_names() {
  static const std::vector<std::string> names = {
      "from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding",
      "list-unsubscribe", "list-unsubscribe-post"};
  return names;
}

// (name, field) pairs of the headers to sign, in signing order.
inline std::vector<std::pair<std::string, std::string_view>> pick_headers(const Split& s) {
  std::vector<std::pair<std::string, std::string_view>> out;
  for (const std::string& name : signed_header_names()) {
    for (auto it = s.fields.rbegin(); it != s.fields.rend(); ++it) {
      const size_t colon = it->find(':');
      if (colon == std::string_view::npos) continue;
      std::string_view n = it->substr(0, colon);
      while (!n.empty() && wsp(n.back())) n.remove_suffix(1);
      if (lower(n) == name) {
        out.emplace_back(name, *it);
        break;
      }
    }
  }
  return out;
}

}  // namespace dkim
