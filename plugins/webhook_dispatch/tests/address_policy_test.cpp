// Which addresses a webhook may reach (pure logic).
#include <catch2/catch.hpp>

#include <jobhost_plugins/address_policy.hpp>

using jobhost_plugins::net::non_public_reason;
using jobhost_plugins::net::parse_address;
using jobhost_plugins::net::parse_cidr;

namespace {

bool is_public(const char* text) { return !non_public_reason(*parse_address(text)).has_value(); }

}  // namespace

TEST_CASE("webhook addresses: private, loopback, link-local and the like are not public") {
  for (const char* a : {"127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                        "169.254.169.254", "0.0.0.0", "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "::",
                        "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                        "::ffff:169.254.169.254"}) {
    INFO(a);
    CHECK_FALSE(is_public(a));
  }
  CHECK(*non_public_reason(*parse_address("169.254.169.254")) == "a link-local address");
  CHECK(*non_public_reason(*parse_address("::ffff:127.0.0.1")) == "a loopback address");
}

TEST_CASE("webhook addresses: public ones pass") {
  for (const char* a : {"93.184.215.14", "8.8.8.8", "172.32.0.1", "192.169.0.1", "2001:4860:4860::8888",
                        "::ffff:8.8.8.8"}) {
    INFO(a);
    CHECK(is_public(a));
  }
}

TEST_CASE("webhook addresses: CIDR allow-lists, for IPv4, IPv6 and mapped forms") {
  const auto loop = *parse_cidr("127.0.0.0/8");
  CHECK(loop.contains(*parse_address("127.0.0.1")));
  CHECK(loop.contains(*parse_address("::ffff:127.9.9.9")));
  CHECK_FALSE(loop.contains(*parse_address("128.0.0.1")));
  CHECK_FALSE(loop.contains(*parse_address("::1")));
  const auto v6 = *parse_cidr("fd00::/8");
  CHECK(v6.contains(*parse_address("fd12::1")));
  CHECK_FALSE(v6.contains(*parse_address("fe80::1")));
  CHECK(parse_cidr("10.0.0.5")->contains(*parse_address("10.0.0.5")));
  CHECK_FALSE(parse_cidr("10.0.0.5")->contains(*parse_address("10.0.0.6")));
  for (const char* bad : {"10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/", "10.0.0.0/x"}) {
    INFO(bad);
    CHECK_FALSE(parse_cidr(bad).has_value());
  }
}
