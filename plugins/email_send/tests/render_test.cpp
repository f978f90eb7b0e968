// Template rendering and the MIME message (pure logic).
#include <catch2/catch.hpp>

#include "render.hpp"

TEST_CASE("render: {{var}} with spaces, escaped in HTML only, missing variables named") {
  const nlohmann::json vars{{"name", "<b>Ann & \"Co\"</b>"}, {"n", 3}};
  CHECK(mail::render("Hi {{name}}, {{ n }} items", vars, false) == "Hi <b>Ann & \"Co\"</b>, 3 items");
  CHECK(mail::render("<p>{{name}}</p>", vars, true) == "<p>&lt;b&gt;Ann &amp; &quot;Co&quot;&lt;/b&gt;</p>");
  CHECK_THROWS_WITH(mail::render("Hi {{who}}", vars, false),
                    "payload.variables.who: missing, and the template uses {{who}}");
  CHECK(mail::render("no placeholders {{ unclosed", vars, false) == "no placeholders {{ unclosed");
}

TEST_CASE("mime: base64 wraps at 76, non-ASCII subjects are encoded, parts are alternative") {
  CHECK(mail::base64("Man") == "TWFu");
  CHECK(mail::base64("Ma") == "TWE=");
  CHECK(mail::base64(std::string(100, 'x')).find("\r\n") == 76);
  CHECK(mail::header_text("Grüße") == "=?UTF-8?B?R3LDvMOfZQ==?=");
  const std::string m = mail::mime("a@x.io", "b@y.io", "<id1@jobhost>", {"S", "text", "<p>html</p>"}, 0);
  CHECK(m.find("Content-Type: multipart/alternative;\r\n boundary=\"=_jobhost_id1\"\r\n") != std::string::npos);
  CHECK(m.find("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n") != std::string::npos);
  CHECK(m.find("Message-ID: <id1@jobhost>\r\n") != std::string::npos);
  CHECK(m.find("--=_jobhost_id1--\r\n") != std::string::npos);
}

TEST_CASE("header_text: control characters cannot add a header, long UTF-8 is folded between characters") {
  CHECK(mail::header_text("Hi\r\nBcc: x@y.io") == "Hi  Bcc: x@y.io");
  CHECK(mail::header_text(std::string(900, 'a')) == std::string(900, 'a'));
  std::string ue;
  for (int i = 0; i < 40; ++i) ue += "\xc3\xbc";  // 40 x u-umlaut, 80 bytes
  const std::string h = mail::header_text(ue);
  // Words of 38 bytes (19 characters; the 39th byte would split one), folded.
  const auto word = [&](size_t at, size_t n) { return "=?UTF-8?B?" + mail::base64(ue.substr(at, n), 0) + "?="; };
  CHECK(h == word(0, 38) + "\r\n " + word(38, 38) + "\r\n " + word(76, 4));
  CHECK(h.find("\r\n") <= 76 - 9);  // after "Subject: "
}
