// mime.cpp: see mime.hpp.
#include "mime.hpp"

#include <algorithm>
#include <cctype>

namespace bounce {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Lines of a text, CRLF or LF, each without its end; tells where it started.
class Lines {
 public:
  explicit Lines(std::string_view text) : text_(text) {}
  bool next(std::string_view& line) {
    if (pos_ >= text_.size()) return false;
    start_ = pos_;
    const size_t nl = text_.find('\n', pos_);
    const size_t end = nl == std::string_view::npos ? text_.size() : nl;
    line = text_.substr(pos_, end - pos_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos_ = nl == std::string_view::npos ? text_.size() : nl + 1;
    return true;
  }
  size_t start() const { return start_; }  // of the line last returned
  size_t pos() const { return pos_; }      // after it

 private:
  std::string_view text_;
  size_t pos_ = 0, start_ = 0;
};

bool is_field_name_char(char c) { return c > 32 && c < 127 && c != ':'; }

// "Name: value" -> the length of Name, or 0 when the line is not a field.
size_t field_name_length(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && is_field_name_char(line[i])) ++i;
  return i > 0 && i < line.size() && line[i] == ':' ? i : 0;
}

struct HeaderBlock {
  Fields fields;
  size_t body_start = 0;  // offset of the body in the text
  bool complete = false;  // a blank line ended it
  size_t valid_fields = 0;
};

// The header block at the start of text. Lines that are neither fields nor
// continuations are skipped (real MTAs write a few), not fatal.
HeaderBlock read_header_block(std::string_view text, size_t max_bytes, bool strict) {
  HeaderBlock block;
  Lines lines(text);
  std::string_view line;
  std::string name, value;
  bool first = true;
  auto flush = [&] {
    if (!name.empty()) block.fields.add({name, decode_words(trim(value))});
    name.clear();
    value.clear();
  };
  while (lines.next(line)) {
    if (lines.pos() > max_bytes) {
      throw Malformed("a header block is longer than " + std::to_string(max_bytes) +
                      " bytes (settings.max_header_bytes)");
    }
    if (line.empty()) {
      block.complete = true;
      block.body_start = lines.pos();
      break;
    }
    if (first && line.substr(0, 5) == "From ") {  // an mbox separator before the first field
      first = false;
      continue;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      if (!name.empty()) value.append(line);
      continue;
    }
    const size_t n = field_name_length(line);
    if (n == 0) {
      if (strict && first)
        throw Malformed("the message does not start with a header field: not a mail message");
      flush();
      first = false;
      continue;
    }
    first = false;
    flush();
    name.assign(line.substr(0, n));
    value.assign(line.substr(n + 1));
    ++block.valid_fields;
  }
  flush();
  if (!block.complete) block.body_start = text.size();
  return block;
}

// Content-Type: type/subtype; name=value; name="quoted value"
void read_content_type(Part& part) {
  const std::string ct = part.headers.get("Content-Type");
  std::string_view rest = ct;
  const size_t semi = rest.find(';');
  std::string type = lower(trim(rest.substr(0, semi)));
  if (type.find('/') == std::string::npos) type.clear();
  // RFC 2045: a part without a (usable) Content-Type is text/plain, except in a
  // multipart/digest, which nobody sends back as a bounce.
  part.type = type.empty() ? "text/plain" : type;
  if (semi == std::string_view::npos) return;
  rest.remove_prefix(semi + 1);
  while (!rest.empty()) {
    const size_t eq = rest.find('=');
    if (eq == std::string_view::npos) break;
    const std::string key = lower(trim(rest.substr(0, eq)));
    rest.remove_prefix(eq + 1);
    rest = trim(rest);
    std::string val;
    if (!rest.empty() && rest.front() == '"') {
      size_t i = 1;
      for (; i < rest.size() && rest[i] != '"'; ++i) {
        if (rest[i] == '\\' && i + 1 < rest.size()) ++i;
        val += rest[i];
      }
      rest.remove_prefix(std::min(rest.size(), i + 1));
      const size_t next = rest.find(';');
      rest.remove_prefix(next == std::string_view::npos ? rest.size() : next + 1);
    } else {
      const size_t next = rest.find(';');
      val = std::string(trim(rest.substr(0, next)));
      rest.remove_prefix(next == std::string_view::npos ? rest.size() : next + 1);
    }
    if (!key.empty()) part.params[key] = val;
  }
}

class Parser {
 public:
  explicit Parser(const Limits& limits) : limits_(limits) {}

  // strict: the message itself (or a part of its own structure), where a
  // missing end means the file was cut short; lenient inside an original.
  Part parse(std::string_view text, size_t depth, bool strict, bool top) {
    if (++parts_ > limits_.max_parts) {
      throw Malformed("more than " + std::to_string(limits_.max_parts) + " MIME parts (settings.max_parts)");
    }
    if (depth > limits_.max_depth) {
      throw Malformed("MIME parts nested deeper than " + std::to_string(limits_.max_depth) + " levels");
    }
    Part part;
    HeaderBlock block = read_header_block(text, limits_.max_header_bytes, top);
    if (top && block.valid_fields == 0) throw Malformed("no header fields: not a mail message");
    if (top && !block.complete) {
      throw Malformed(
          "the message ends inside its header block (no blank line after the fields): truncated?");
    }
    part.headers = std::move(block.fields);
    read_content_type(part);
    const std::string_view body = text.substr(block.body_start);
    if (part.type.rfind("multipart/", 0) == 0 && !part.params["boundary"].empty()) {
      split_multipart(part, body, depth, strict);
    } else if (part.type == "message/rfc822" || part.type == "message/global" ||
               part.type == "text/rfc822-headers" || part.type == "message/global-headers") {
      const std::string decoded = decode_body(part, body);
      Part inner;
      inner.enclosed = true;
      HeaderBlock original = read_header_block(decoded, limits_.max_header_bytes, false);
      inner.headers = std::move(original.fields);
      read_content_type(inner);
      part.children.push_back(std::move(inner));
      ++parts_;
    } else {
      part.body = decode_body(part, body);
    }
    return part;
  }

 private:
  std::string decode_body(const Part& part, std::string_view body) const {
    const std::string cte = lower(trim(part.headers.get("Content-Transfer-Encoding")));
    if (cte == "base64") return decode_base64(body);
    if (cte == "quoted-printable") return decode_quoted_printable(body);
    return std::string(body);
  }

  void split_multipart(Part& part, std::string_view body, size_t depth, bool strict) {
    const std::string delimiter = "--" + part.params["boundary"];
    Lines lines(body);
    std::string_view line;
    size_t part_start = std::string_view::npos;
    bool closed = false;
    while (lines.next(line)) {
      if (line.size() < delimiter.size() || line.compare(0, delimiter.size(), delimiter) != 0) continue;
      const std::string_view tail = trim(line.substr(delimiter.size()));
      const bool close = tail == "--";
      if (!close && !tail.empty()) continue;  // a longer boundary that starts the same
      if (part_start != std::string_view::npos) {
        // The line break before a delimiter belongs to the delimiter (RFC 2046).
        size_t end = lines.start();
        if (end > part_start && body[end - 1] == '\n') --end;
        if (end > part_start && body[end - 1] == '\r') --end;
        part.children.push_back(parse(body.substr(part_start, end - part_start), depth + 1, strict, false));
      }
      if (close) {
        closed = true;
        break;
      }
      part_start = lines.pos();
    }
    if (!closed) {
      if (strict) {
        throw Malformed("the message ends inside a " + part.type + " (no closing boundary \"" + delimiter +
                        "--\"): truncated?");
      }
      if (part_start != std::string_view::npos) {
        part.children.push_back(parse(body.substr(part_start), depth + 1, strict, false));
      }
    }
  }

  const Limits& limits_;
  size_t parts_ = 0;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string Fields::get(std::string_view name) const {
  for (const Field& f : fields_) {
    if (iequals(f.name, name)) return f.value;
  }
  return {};
}

bool Fields::has(std::string_view name) const {
  return std::any_of(fields_.begin(), fields_.end(), [&](const Field& f) { return iequals(f.name, name); });
}

// Characters outside the alphabet (line breaks, garbage) are skipped; "="
// ends the data.
std::string decode_base64(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 3 / 4);
  unsigned bits = 0;
  int nbits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = base64_value(c);
    if (v < 0) continue;
    bits = (bits << 6) | static_cast<unsigned>(v);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out += static_cast<char>((bits >> nbits) & 0xFF);
    }
  }
  return out;
}

std::string decode_quoted_printable(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '=') {
      out += in[i];
      continue;
    }
    // "=\r\n", "=\n" or "=" at the very end: a soft line break.
    if (i + 1 == in.size()) break;
    if (in[i + 1] == '\n') {
      ++i;
      continue;
    }
    if (i + 2 < in.size() && in[i + 1] == '\r' && in[i + 2] == '\n') {
      i += 2;
      continue;
    }
    if (i + 2 < in.size()) {
      const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += '=';  // not an escape: kept as written
  }
  return out;
}

// =?charset?Q?text?= and =?charset?B?text?=, bytes kept as they are (the
// classifier reads ASCII words; the charset is not converted).
std::string decode_words(std::string_view in) {
  std::string out;
  size_t i = 0;
  bool after_word = false;
  while (i < in.size()) {
    if (in.compare(i, 2, "=?") == 0) {
      const size_t q1 = in.find('?', i + 2);
      const size_t q2 = q1 == std::string_view::npos ? q1 : in.find('?', q1 + 1);
      const size_t end = q2 == std::string_view::npos ? q2 : in.find("?=", q2 + 1);
      if (end != std::string_view::npos && q2 == q1 + 2) {
        const char enc = static_cast<char>(std::toupper(static_cast<unsigned char>(in[q1 + 1])));
        const std::string_view text = in.substr(q2 + 1, end - q2 - 1);
        if (enc == 'B') {
          out += decode_base64(text);
        } else if (enc == 'Q') {
          std::string t(text);
          std::replace(t.begin(), t.end(), '_', ' ');
          out += decode_quoted_printable(t);
        } else {
          out.append(in.substr(i, end + 2 - i));
        }
        i = end + 2;
        after_word = true;
        continue;
      }
    }
    // Blanks between two encoded words are not part of the text (RFC 2047 6.2).
    if (after_word && (in[i] == ' ' || in[i] == '\t')) {
      size_t j = i;
      while (j < in.size() && (in[j] == ' ' || in[j] == '\t')) ++j;
      if (in.compare(j, 2, "=?") == 0) {
        i = j;
        continue;
      }
    }
    after_word = false;
    out += in[i++];
  }
  return out;
}

std::vector<Fields> parse_field_groups(std::string_view text, size_t max_bytes) {
  std::vector<Fields> groups;
  size_t total = 0;
  while (!text.empty()) {
    // Blank lines between groups.
    while (!text.empty() &&
           (text.front() == '\n' || text.front() == '\r' || text.front() == ' ' || text.front() == '\t')) {
      const size_t nl = text.find('\n');
      const std::string_view line = trim(text.substr(0, nl));
      if (!line.empty()) break;
      text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    }
    if (text.empty()) break;
    HeaderBlock block = read_header_block(text, max_bytes, false);
    total += block.body_start;
    if (total > max_bytes)
      throw Malformed("a delivery report is longer than " + std::to_string(max_bytes) + " bytes");
    if (!block.fields.all().empty()) groups.push_back(std::move(block.fields));
    if (block.body_start == 0) break;
    text.remove_prefix(std::min(text.size(), block.body_start));
  }
  return groups;
}

Part parse_message(std::string_view raw, const Limits& limits) {
  if (raw.empty()) throw Malformed("the file is empty");
  if (const size_t nul = raw.find('\0'); nul != std::string_view::npos) {
    throw Malformed("a NUL byte at offset " + std::to_string(nul) + ": binary data, not a mail message");
  }
  Parser parser(limits);
  return parser.parse(raw, 0, true, true);
}

}  // namespace bounce
