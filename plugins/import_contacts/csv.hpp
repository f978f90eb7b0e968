// csv.hpp: an incremental RFC 4180 reader of UTF-8 text (decode.hpp turns
// other encodings into it). Bytes go in as they arrive (from a file or an HTTP
// body), whole rows come out through a callback, and memory stays bounded by
// the longest accepted row, whatever the file's size.
//
// Fields are separated by the delimiter (',' unless told: ';', '\t', '|') and
// rows by LF, CRLF or a lone CR; a field in double quotes may hold delimiters,
// line breaks and "" for a quote. A row is numbered by the physical line it
// starts on (LF, CRLF and a lone CR each end one line, inside quotes too), so a
// rejection points at the right line of the file. A row is reported with a
// problem, its content then unusable, instead of breaking the import when it:
// is longer than max_row_bytes or has a field longer than max_field_bytes
// (content dropped, not buffered), holds a NUL byte or bytes that are not UTF-8
// (PostgreSQL would refuse them), has stray quotes, or ends the input inside
// quotes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace csv {

// The offset of the first byte of text that is not well-formed UTF-8 (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or nullopt.
inline std::optional<size_t> utf8_error(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::nullopt;
}

// text with every ill-formed sequence and NUL replaced by U+FFFD: safe to store.
inline std::string utf8_sanitized(std::string_view text) {
  std::string out;
  while (!text.empty()) {
    const size_t bad = utf8_error(text).value_or(text.size());
    const size_t nul = text.substr(0, bad).find('\0');
    const size_t cut = nul == std::string_view::npos ? bad : nul;
    out.append(text.substr(0, cut));
    if (cut == text.size()) break;
    out += "\xEF\xBF\xBD";
    text.remove_prefix(cut + 1);
  }
  return out;
}

// For delimiter "auto": the candidate (',', ';', '\t', '|') seen most often
// outside quotes in the first line of head; a tie goes to the earlier one in
// that list, none at all to ','. complete: head holds the whole first line.
struct FirstLine {
  bool complete = false;
  char delimiter = ',';
};
inline FirstLine sniff_delimiter(std::string_view head) {
  static constexpr char kCandidates[] = {',', ';', '\t', '|'};
  size_t counts[4] = {0, 0, 0, 0};
  bool quoted = false;
  FirstLine out;
  for (const char c : head) {
    if (c == '"') quoted = !quoted;
    if (quoted) continue;
    if (c == '\n' || c == '\r') {
      out.complete = true;
      break;
    }
    for (size_t i = 0; i < 4; ++i) counts[i] += c == kCandidates[i];
  }
  size_t best = 0;
  for (size_t i = 1; i < 4; ++i) {
    if (counts[i] > counts[best]) best = i;
  }
  out.delimiter = kCandidates[best];
  return out;
}

struct Options {
  size_t max_row_bytes = 65536;
  size_t max_field_bytes = 65536;
  char delimiter = ',';
};

struct Row {
  std::vector<std::string> fields;
  int64_t line = 0;     // the physical line the row starts on, from 1
  std::string problem;  // non-empty: the row is malformed (fields then unusable)
};

class Reader {
 public:
  using Sink = std::function<void(Row&)>;
  Reader(Sink sink, Options options) : sink_(std::move(sink)), options_(options) {}

  // Before the first feed (delimiter "auto" decides it from the first line).
  void set_delimiter(char d) { options_.delimiter = d; }

  // Named in the reason of a row that is not valid text ("utf-8" unless told).
  void set_encoding_name(std::string name) { encoding_name_ = std::move(name); }

  void feed(std::string_view data) {
    for (const char c : data) {
      take(c);
      // After the byte: the row it ends still starts on the line it started on.
      if (c == '\r' || (c == '\n' && previous_ != '\r')) ++line_;
      previous_ = c;
    }
  }

  // The input ended: emits the last row, if any.
  void finish() {
    if (state_ == State::kQuoted) problem("a quoted field is never closed (the file ends inside it)");
    if (row_started_) end_row();
  }

 private:
  enum class State { kFieldStart, kUnquoted, kQuoted, kQuoteInQuoted, kCarriageReturn };

  void take(char c) {
    if (!row_started_) {
      row_started_ = true;
      row_.line = line_;
    }
    switch (state_) {
      case State::kCarriageReturn:
        state_ = State::kFieldStart;
        end_row();
        if (c == '\n') return;
        take(c);  // a lone CR ends the row too
        return;
      case State::kFieldStart:
        if (c == '"') {
          state_ = State::kQuoted;
          return;
        }
        state_ = State::kUnquoted;
        [[fallthrough]];
      case State::kUnquoted:
        if (c == options_.delimiter) return end_field();
        if (c == '\n') return end_row();
        if (c == '\r') {
          state_ = State::kCarriageReturn;
          return;
        }
        if (c == '"') problem("a quote inside an unquoted field");
        return append(c);
      case State::kQuoted:
        if (c == '"') {
          state_ = State::kQuoteInQuoted;
          return;
        }
        return append(c);
      case State::kQuoteInQuoted:
        if (c == '"') {
          state_ = State::kQuoted;
          return append('"');
        }
        state_ = State::kUnquoted;
        if (c == options_.delimiter) return end_field();
        if (c == '\n') return end_row();
        if (c == '\r') {
          state_ = State::kCarriageReturn;
          return;
        }
        problem("text after a closing quote");
        return append(c);
    }
  }

  // The first problem of a row is the one reported, but a row too long says so.
  void problem(std::string what) {
    if (problem_.empty()) problem_ = std::move(what);
  }

  void append(char c) {
    if (++row_bytes_ > options_.max_row_bytes) {
      if (!too_long_) problem_ = "the row is longer than " + std::to_string(options_.max_row_bytes) + " bytes";
      too_long_ = true;
      return;
    }
    if (++field_bytes_ > options_.max_field_bytes) {
      problem("field " + std::to_string(row_.fields.size() + 1) + " is longer than " +
              std::to_string(options_.max_field_bytes) + " bytes (max_field_bytes)");
      return;
    }
    if (c == '\0') problem("field " + std::to_string(row_.fields.size() + 1) + " holds a NUL byte");
    field_ += c;
  }

  void end_field() {
    if (problem_.empty()) {
      if (const auto at = utf8_error(field_)) {
        problem_ = "field " + std::to_string(row_.fields.size() + 1) + " is not valid " + encoding_name_ +
                   (encoding_name_ == "utf-8" ? " (byte " + hex(field_[*at]) + " at offset " + std::to_string(*at) + ")"
                                              : "");
      }
    }
    row_.fields.push_back(std::move(field_));
    field_.clear();
    field_bytes_ = 0;
    state_ = State::kFieldStart;
  }

  static std::string hex(char c) {
    static constexpr char digits[] = "0123456789ABCDEF";
    const auto b = static_cast<unsigned char>(c);
    return std::string("0x") + digits[b >> 4] + digits[b & 15];
  }

  void end_row() {
    end_field();
    row_.problem = std::move(problem_);
    // A blank line is no row at all.
    if (!(row_.fields.size() == 1 && row_.fields[0].empty() && row_.problem.empty())) sink_(row_);
    row_.fields.clear();
    row_.problem.clear();
    problem_.clear();
    row_bytes_ = 0;
    too_long_ = false;
    row_started_ = false;
    state_ = State::kFieldStart;
  }

  Sink sink_;
  Options options_;
  std::string encoding_name_ = "utf-8";
  State state_ = State::kFieldStart;
  Row row_;
  std::string field_;
  std::string problem_;
  size_t row_bytes_ = 0, field_bytes_ = 0;
  bool too_long_ = false;
  int64_t line_ = 1;
  char previous_ = 0;
  bool row_started_ = false;
};

}  // namespace csv
