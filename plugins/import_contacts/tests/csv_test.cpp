// The incremental CSV reader and the decoder in front of it (pure logic, iconv).
#include <catch2/catch.hpp>

#include "csv.hpp"
#include "decode.hpp"

namespace {

// A literal's bytes, NULs included.
template <size_t N>
std::string bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// text (in encoding) through the decoder and the reader, chunk bytes at a time.
std::vector<csv::Row> parse(const std::string& text, size_t chunk = 1, size_t max_row = 1000, char delimiter = ',',
                            csv::Encoding encoding = csv::Encoding::kUtf8, size_t max_field = 1000) {
  std::vector<csv::Row> rows;
  csv::Reader r([&](csv::Row& row) { rows.push_back(row); }, csv::Options{max_row, max_field, delimiter});
  csv::Decoder d(encoding, [&](std::string_view utf8) { r.feed(utf8); });
  r.set_encoding_name(csv::encoding_name(encoding));
  for (size_t i = 0; i < text.size(); i += chunk) d.feed(std::string_view(text).substr(i, chunk));
  d.finish();
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

TEST_CASE("csv: a bad byte, a NUL or an oversized field is one rejected row, the rows around it stay whole") {
  const auto rows = parse(bytes("a@x,Ann\nb@x,Caf\xE9\nc@x,n\0l\nd@x,") + std::string(40, 'z') + "\ne@x,\xC3\xA9t\xC3\xA9\n"
                          "f@x,\xED\xA0\x80\ng@x,\xC0\xAF\n", 5, 1000, ',', csv::Encoding::kUtf8, 30);
  REQUIRE(rows.size() == 7);
  CHECK(rows[0].problem.empty());
  CHECK(rows[1].line == 2);
  CHECK(rows[1].problem == "field 2 is not valid utf-8 (byte 0xE9 at offset 3)");
  CHECK(rows[2].problem == "field 2 holds a NUL byte");
  CHECK(rows[3].problem == "field 2 is longer than 30 bytes (max_field_bytes)");
  CHECK(rows[4].problem.empty());
  CHECK(rows[4].fields[1] == "\xC3\xA9t\xC3\xA9");
  CHECK(rows[5].problem == "field 2 is not valid utf-8 (byte 0xED at offset 0)");  // a surrogate
  CHECK(rows[6].problem == "field 2 is not valid utf-8 (byte 0xC0 at offset 0)");  // overlong
  CHECK(csv::utf8_sanitized(bytes("Caf\xE9 n\0l \xC3")) == "Caf\xEF\xBF\xBD n\xEF\xBF\xBDl \xEF\xBF\xBD");
}

TEST_CASE("csv: line numbers stay right with CRLF, lone CR and line breaks inside quotes") {
  const auto rows = parse("h1,h2\r\na,1\rb,2\r\n\"x\r\ny\",3\r\"p\rq\",4\nlast,5", 3);
  REQUIRE(rows.size() == 6);
  CHECK(rows[1].line == 2);
  CHECK(rows[2].line == 3);
  CHECK(rows[3].line == 4);
  CHECK(rows[3].fields[0] == "x\r\ny");
  CHECK(rows[4].line == 6);
  CHECK(rows[5].line == 8);
  CHECK(rows[5].fields == std::vector<std::string>{"last", "5"});
}

TEST_CASE("csv: other delimiters, and auto chooses from the first line outside quotes") {
  const auto semi = parse("email;name\na@x;\"A; B\"\n", 1, 1000, ';');
  REQUIRE(semi.size() == 2);
  CHECK(semi[1].fields == std::vector<std::string>{"a@x", "A; B"});
  CHECK(parse("a\tb,c\n", 4, 1000, '\t')[0].fields == std::vector<std::string>{"a", "b,c"});
  CHECK(parse("a|b\n", 4, 1000, '|')[0].fields == std::vector<std::string>{"a", "b"});
  CHECK(csv::sniff_delimiter("\"a,b,c\";x;y\nrest,,,,").delimiter == ';');
  CHECK(csv::sniff_delimiter("\"a,b,c\";x;y\nrest,,,,").complete);
  CHECK(csv::sniff_delimiter("a\tb\tc|d\r").delimiter == '\t');
  CHECK(csv::sniff_delimiter("email\n").delimiter == ',');
  CHECK(!csv::sniff_delimiter("a;b").complete);
}

TEST_CASE("decode: windows-1252, iso-8859-1 and utf-16 become utf-8, undefined bytes are one bad row") {
  // 0x80 is the euro sign in Windows-1252, 0x81 is undefined.
  const auto w = parse("Caf\xE9,\x80\nbad,\x81\nok,\xFF\n", 2, 1000, ',', csv::Encoding::kWindows1252);
  REQUIRE(w.size() == 3);
  CHECK(w[0].fields == std::vector<std::string>{"Caf\xC3\xA9", "\xE2\x82\xAC"});
  CHECK(w[1].problem == "field 2 is not valid windows-1252");
  CHECK(w[2].fields[1] == "\xC3\xBF");
  CHECK(parse("\x81\n", 1, 1000, ',', csv::Encoding::kIso88591)[0].fields[0] == "\xC2\x81");
  // "é€\n" in UTF-16LE with a BOM, and a character outside the BMP (a surrogate
  // pair), fed one byte at a time: every character is split across feeds.
  const std::string le = bytes("\xFF\xFE\xE9\x00\xAC\x20,\x00\x3D\xD8\x00\xDE\n\x00");
  const auto u = parse(le, 1, 1000, ',', csv::Encoding::kUtf16);
  REQUIRE(u.size() == 1);
  CHECK(u[0].fields == std::vector<std::string>{"\xC3\xA9\xE2\x82\xAC", "\xF0\x9F\x98\x80"});
  // No BOM: the byte order is read from the first bytes (here big-endian).
  CHECK(parse(bytes("\x00" "a\x00,\x00" "b"), 4, 1000, ',', csv::Encoding::kUtf16)[0].fields ==
        std::vector<std::string>{"a", "b"});
  // A lone surrogate, then an odd byte at the end: two bad rows, the good one between kept.
  const std::string bad = bytes("a\x00\x00\xD8\n\x00g\x00o\x00\n\x00z");
  const auto b = parse(bad, 3, 1000, ',', csv::Encoding::kUtf16Le);
  REQUIRE(b.size() == 3);
  CHECK(b[0].problem == "field 1 is not valid utf-16le");
  CHECK(b[1].fields[0] == "go");
  CHECK(b[2].line == 3);
  CHECK(b[2].problem == "field 1 is not valid utf-16le");
}

TEST_CASE("decode: a byte-order mark wins over the declared encoding, and is dropped") {
  const auto u8 = parse("\xEF\xBB\xBF\xC3\xA9,x\n", 1, 1000, ',', csv::Encoding::kWindows1252);
  REQUIRE(u8.size() == 1);
  CHECK(u8[0].fields[0] == "\xC3\xA9");
  std::string seen;
  csv::Decoder d(csv::Encoding::kUtf8, [&](std::string_view t) { seen += t; });
  d.feed(bytes("\xFE\xFF\x00"));
  d.feed(bytes("a"));
  d.finish();
  CHECK(d.encoding() == csv::Encoding::kUtf16Be);
  CHECK(seen == "a");
}

TEST_CASE("decode: a chunk boundary inside a character carries it over, whatever the chunk size") {
  std::string utf16;
  for (int i = 0; i < 40000; ++i) utf16 += bytes("\xAC\x20\x3D\xD8\x00\xDE\n\x00");  // €😀\n
  for (const size_t chunk : {size_t{1}, size_t{3}, size_t{65537}}) {
    size_t bytes = 0, lines = 0;
    csv::Decoder d(csv::Encoding::kUtf16Le, [&](std::string_view t) {
      bytes += t.size();
      for (const char c : t) lines += c == '\n';
      CHECK(t.find(csv::kInvalid) == std::string_view::npos);
    });
    for (size_t i = 0; i < utf16.size(); i += chunk) d.feed(std::string_view(utf16).substr(i, chunk));
    d.finish();
    CHECK(bytes == 40000u * 8);
    CHECK(lines == 40000u);
  }
}
