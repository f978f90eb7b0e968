// DKIM relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4) and header picking.
#include <catch2/catch.hpp>

#include "dkim_canon.hpp"

using namespace dkim;

TEST_CASE("relaxed header: lower-case name, unfolded, one space per run, no space at the ends", "[dkim]") {
  CHECK(relaxed_header("Subject :  Hello \t  World  ") == "subject:Hello World\r\n");
  CHECK(relaxed_header("Content-Type: multipart/alternative;\r\n boundary=\"x\"") ==
        "content-type:multipart/alternative; boundary=\"x\"\r\n");
}

TEST_CASE("relaxed body: trailing blanks and empty lines go, inner runs become one space", "[dkim]") {
  // RFC 6376 3.4.6's example body.
  CHECK(relaxed_body(" C \r\nD \t E\r\n\r\n\r\n") == " C\r\nD E\r\n");
  CHECK(relaxed_body("") == "");
  CHECK(relaxed_body("\r\n\r\n") == "");
  CHECK(relaxed_body("no final line end") == "no final line end\r\n");
}

TEST_CASE("the signed headers are the last occurrence of each, folded lines kept together", "[dkim]") {
  const std::string m = "Received: x\r\nFrom: a@b.example\r\nTo: c@d.example\r\nSubject: one\r\nSubject: two\r\n"
                        "Content-Type: text/plain;\r\n charset=UTF-8\r\nX-Other: y\r\n\r\nbody\r\n";
  const Split s = split(m);
  CHECK(s.fields.size() == 7);
  CHECK(s.body == "body\r\n");
  const auto picked = pick_headers(s);
  REQUIRE(picked.size() == 4);
  CHECK(picked[0].first == "from");
  CHECK(picked[2].second == "Subject: two");
  CHECK(picked[3].second == "Content-Type: text/plain;\r\n charset=UTF-8");
}
