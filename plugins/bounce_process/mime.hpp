// mime.hpp: the MIME structure of one returned message, as far as
// bounce.process needs it: header fields (unfolded, RFC 2047 words decoded),
// the content type and its parameters, leaf bodies with their transfer
// encoding undone (base64, quoted-printable), multiparts split on their
// boundaries at any depth, and the header block of an enclosed message
// (message/rfc822, text/rfc822-headers).
//
// Pure: text in, tree out. Bounded: the caller caps the message's size before
// it is read; here the header block of every part, the number of parts and
// their depth are capped (Limits), and a decoded body is never longer than its
// encoded form. Input that is not a mail message (a NUL byte, no header field
// first, the file ending inside the header block or inside the message's own
// multipart) throws Malformed with the reason; it never crashes.
//
// An enclosed original is read leniently: MTAs cut it short on purpose
// (Postfix's bounce_size_limit), so only its header block is parsed and a
// missing end there is no error.
#pragma once

#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace bounce {

struct Malformed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Limits {
  size_t max_header_bytes = 64 * 1024;  // one part's header block
  size_t max_parts = 500;               // parts in the whole message
  size_t max_depth = 10;                // multiparts inside multiparts
};

struct Field {
  std::string name;   // as written
  std::string value;  // unfolded, trimmed, encoded words decoded
};

class Fields {
 public:
  void add(Field f) { fields_.push_back(std::move(f)); }
  // The first field of that name (case-insensitive), "" when none.
  std::string get(std::string_view name) const;
  bool has(std::string_view name) const;
  const std::vector<Field>& all() const { return fields_; }

 private:
  std::vector<Field> fields_;
};

struct Part {
  Fields headers;
  std::string type = "text/plain";            // lower case, from Content-Type
  std::map<std::string, std::string> params;  // lower-case names: boundary, report-type, charset ...
  std::string body;                           // a leaf's decoded body ("" for a multipart)
  std::vector<Part> children;                 // a multipart's parts; an enclosed message: its one part
  bool enclosed = false;                      // the header block of a message/rfc822 or text/rfc822-headers
};

// The whole message. Throws Malformed.
Part parse_message(std::string_view raw, const Limits& limits = {});

// Header fields alone (the body of message/delivery-status and
// message/feedback-report is groups of them, split by blank lines).
std::vector<Fields> parse_field_groups(std::string_view text, size_t max_bytes);

// Undoing transfer encodings and RFC 2047 encoded words; exposed for tests.
std::string decode_base64(std::string_view in);
std::string decode_quoted_printable(std::string_view in);
std::string decode_words(std::string_view in);

// Lower-case ASCII copy.
std::string lower(std::string_view s);

}  // namespace bounce
