// The SMTP client's pure parts: replies, EHLO capabilities, dot-stuffing.
#include <catch2/catch.hpp>

#include "smtp_protocol.hpp"

using namespace smtp_client;

TEST_CASE("a multi-line reply is taken whole, and an incomplete one waits for more", "[smtp]") {
  Reply r;
  CHECK(parse_reply("250-first\r\n250-second\r\n", r) == 0);
  r = {};
  const std::string in = "250-first\r\n250 last\r\n354 go";
  CHECK(parse_reply(in, r) == 21);
  CHECK(r.code == 250);
  CHECK(r.line == "250 last");
  r = {};
  CHECK(parse_reply("421\r\n", r) == 5);
  CHECK(r.transient());
}

TEST_CASE("a reply that is not SMTP is an error naming what came", "[smtp]") {
  Reply r;
  CHECK_THROWS_WITH(parse_reply("HTTP/1.1 400 Bad\r\n", r), Catch::Contains("not an SMTP reply: \"HTTP/1.1"));
  r = {};
  CHECK_THROWS_AS(parse_reply(std::string(5000, '2'), r), ProtocolError);
}

TEST_CASE("EHLO capabilities: PIPELINING, STARTTLS, AUTH methods and SIZE, whatever their case", "[smtp]") {
  const Capabilities c = parse_ehlo("250-relay.example\r\n250-pipelining\r\n250-STARTTLS\r\n250-AUTH LOGIN PLAIN\r\n250 SIZE 1000\r\n");
  CHECK(c.pipelining);
  CHECK(c.starttls);
  CHECK(c.auth_plain);
  CHECK(c.auth_login);
  CHECK(c.size_limit == 1000);
  // The first line is the relay's name (here one that reads like a keyword), not a capability.
  const Capabilities none = parse_ehlo("250-STARTTLS\r\n250 8BITMIME\r\n");
  CHECK_FALSE(none.pipelining);
  CHECK_FALSE(none.starttls);
}

TEST_CASE("dot-stuffing doubles a leading dot on every line and ends the message", "[smtp]") {
  CHECK(dot_stuff(".hidden\r\nok\r\n..two\r\n") == "..hidden\r\nok\r\n...two\r\n.\r\n");
  CHECK(dot_stuff("no end") == "no end\r\n.\r\n");
  CHECK(dot_stuff("a\r\n.") == "a\r\n..\r\n.\r\n");
}

TEST_CASE("an address with CR, LF or angle brackets is not put on the wire", "[smtp]") {
  CHECK(safe_address("ann@example.com"));
  CHECK_FALSE(safe_address("ann@example.com>\r\nRCPT TO:<eve@example.com"));
}
