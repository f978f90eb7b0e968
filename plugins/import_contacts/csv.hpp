// csv.hpp: an incremental RFC 4180 reader. Bytes go in as they arrive (from a
// file or an HTTP body), whole rows come out through a callback, and memory
// stays bounded by the longest accepted row, whatever the file's size.
//
// Fields are separated by commas and rows by LF or CRLF; a field in double
// quotes may hold commas, line breaks and "" for a quote. A row is numbered by
// the physical line it starts on, so a rejection points at the right line of
// the file even after quoted line breaks. A UTF-8 byte-order mark at the very
// start is skipped. A row longer than max_row_bytes is reported as such (its
// content dropped) instead of growing without limit, and a quote still open at
// the end of the input is reported rather than merged into one giant field.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace csv {

struct Row {
  std::vector<std::string> fields;
  int64_t line = 0;     // the physical line the row starts on, from 1
  std::string problem;  // non-empty: the row is malformed (fields then unusable)
};

class Reader {
 public:
  using Sink = std::function<void(Row&)>;
  Reader(Sink sink, size_t max_row_bytes) : sink_(std::move(sink)), max_row_bytes_(max_row_bytes) {}

  void feed(std::string_view data) {
    for (const char c : data) take(c);
  }

  // The input ended: emits the last row, if any.
  void finish() {
    if (state_ == State::kQuoted || state_ == State::kQuoteInQuoted) {
      if (state_ == State::kQuoted) {
        problem_ = "a quoted field is never closed (the file ends inside it)";
      }
    }
    if (row_started_) end_row();
  }

 private:
  enum class State { kFieldStart, kUnquoted, kQuoted, kQuoteInQuoted, kCarriageReturn };

  void take(char c) {
    if (bom_bytes_ < 3) {  // skip EF BB BF at the very start
      static constexpr unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
      if (bom_bytes_ >= 0 && static_cast<unsigned char>(c) == bom[bom_bytes_]) {
        ++bom_bytes_;
        return;
      }
      for (int i = 0; i < bom_bytes_; ++i) take_char(static_cast<char>(bom[i]));
      bom_bytes_ = 3;
    }
    take_char(c);
  }

  void take_char(char c) {
    if (!row_started_) {
      row_started_ = true;
      row_.line = line_;
    }
    if (c == '\n') ++line_;
    switch (state_) {
      case State::kCarriageReturn:
        state_ = State::kFieldStart;
        if (c == '\n') {
          end_row();
          return;
        }
        end_row();  // a lone CR ends the row too
        take_char(c);
        return;
      case State::kFieldStart:
        if (c == '"') {
          state_ = State::kQuoted;
          return;
        }
        state_ = State::kUnquoted;
        [[fallthrough]];
      case State::kUnquoted:
        if (c == ',') return end_field();
        if (c == '\n') return end_row();
        if (c == '\r') {
          state_ = State::kCarriageReturn;
          return;
        }
        if (c == '"' && problem_.empty()) problem_ = "a quote inside an unquoted field";
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
        if (c == ',') return end_field();
        if (c == '\n') return end_row();
        if (c == '\r') {
          state_ = State::kCarriageReturn;
          return;
        }
        if (problem_.empty()) problem_ = "text after a closing quote";
        return append(c);
    }
  }

  void append(char c) {
    if (++row_bytes_ > max_row_bytes_) {
      if (problem_.empty() || problem_.rfind("the row is longer", 0) != 0) {
        problem_ = "the row is longer than " + std::to_string(max_row_bytes_) + " bytes";
      }
      return;
    }
    field_ += c;
  }

  void end_field() {
    row_.fields.push_back(std::move(field_));
    field_.clear();
    state_ = State::kFieldStart;
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
    row_started_ = false;
    state_ = State::kFieldStart;
  }

  Sink sink_;
  size_t max_row_bytes_;
  State state_ = State::kFieldStart;
  Row row_;
  std::string field_;
  std::string problem_;
  size_t row_bytes_ = 0;
  int64_t line_ = 1;
  bool row_started_ = false;
  int bom_bytes_ = 0;
};

}  // namespace csv
