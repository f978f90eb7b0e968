// The plugins' shared toolkit, pure logic: hex and PostgreSQL array literals.
#include <catch2/catch.hpp>

#include <jobhost_plugins/hex.hpp>
#include <jobhost_plugins/pg_array.hpp>

TEST_CASE("hex: bytes as lower-case pairs") {
  const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
  CHECK(jobhost_plugins::hex(bytes, sizeof bytes) == "000fa5ff");
  CHECK(jobhost_plugins::hex(bytes, 0).empty());
}

TEST_CASE("pg_array: every element quoted, quotes and backslashes escaped") {
  CHECK(jobhost_plugins::pg_array({}) == "{}");
  CHECK(jobhost_plugins::pg_array({"a", "b,c", "NULL", "say \"hi\"", "back\\slash", ""}) ==
        R"({"a","b,c","NULL","say \"hi\"","back\\slash",""})");
}
