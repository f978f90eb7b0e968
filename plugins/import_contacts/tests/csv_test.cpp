// The incremental CSV reader (pure logic).
#include <catch2/catch.hpp>

#include "csv.hpp"

namespace {

std::vector<csv::Row> parse(const std::string& text, size_t chunk = 1, size_t max_row = 1000) {
  std::vector<csv::Row> rows;
  csv::Reader r([&](csv::Row& row) { rows.push_back(row); }, max_row);
  for (size_t i = 0; i < text.size(); i += chunk) r.feed(std::string_view(text).substr(i, chunk));
  r.finish();
  return rows;
}

}  // namespace

TEST_CASE("csv: quoted commas, escaped quotes and line breaks, fed a byte at a time") {
  const auto rows = parse("a,\"b,c\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",x,\n", 1);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].fields == std::vector<std::string>{"a", "b,c", "say \"hi\""});
  CHECK(rows[0].line == 1);
  CHECK(rows[1].fields == std::vector<std::string>{"two\nlines", "x", ""});
  CHECK(rows[1].line == 2);
  CHECK(rows[1].problem.empty());
}

TEST_CASE("csv: line numbers count physical lines, blank lines are skipped, a BOM is dropped") {
  const auto rows = parse("\xEF\xBB\xBFh1,h2\n\n\"multi\nline\nfield\",1\nlast,2", 7);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].fields[0] == "h1");
  CHECK(rows[1].line == 3);
  CHECK(rows[2].line == 6);
  CHECK(rows[2].fields == std::vector<std::string>{"last", "2"});
}

TEST_CASE("csv: malformed rows are reported, not merged") {
  const auto open = parse("ok,1\n\"never closed,2\nmore\n");
  REQUIRE(open.size() == 2);
  CHECK(open[0].problem.empty());
  CHECK(open[1].line == 2);
  CHECK(open[1].problem == "a quoted field is never closed (the file ends inside it)");
  const auto stray = parse("a\"b,1\n\"x\"y,2\n");
  REQUIRE(stray.size() == 2);
  CHECK(stray[0].problem == "a quote inside an unquoted field");
  CHECK(stray[1].problem == "text after a closing quote");
  const auto big = parse(std::string(200, 'z') + ",1\nsmall,2\n", 13, 100);
  REQUIRE(big.size() == 2);
  CHECK(big[0].problem == "the row is longer than 100 bytes");
  CHECK(big[1].problem.empty());
  CHECK(big[1].fields[0] == "small");
}
