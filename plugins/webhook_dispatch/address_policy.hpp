// address_policy.hpp: which IP addresses a webhook may be delivered to.
//
// Tenants choose webhook URLs, so a URL must not reach inside the platform's
// network: private, loopback, link-local (cloud metadata at 169.254.169.254),
// unspecified, multicast and other non-public ranges are refused unless an
// operator allow-lists them (settings.allow_cidrs). IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) are judged as the IPv4 address they carry.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace webhook {

// An address as 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
struct Address {
  std::array<uint8_t, 16> bytes{};
  bool v4 = false;
};

inline std::optional<Address> parse_address(const std::string& text) {
  Address a;
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    a.bytes[10] = a.bytes[11] = 0xff;
    std::memcpy(&a.bytes[12], &v4, 4);
    a.v4 = true;
    return a;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    std::memcpy(a.bytes.data(), &v6, 16);
    static constexpr uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    a.v4 = std::memcmp(a.bytes.data(), mapped, 12) == 0;
    return a;
  }
  return std::nullopt;
}

// A network: address and prefix length counted over the 16-byte form (an IPv4
// /8 is /104 here).
struct Cidr {
  Address base;
  int bits = 0;

  bool contains(const Address& a) const {
    for (int i = 0; i < bits; ++i) {
      const int byte = i / 8, bit = 7 - i % 8;
      if (((a.bytes[byte] >> bit) & 1) != ((base.bytes[byte] >> bit) & 1)) return false;
    }
    return true;
  }
};

// "10.0.0.0/8", "fc00::/7", or a single address. nullopt when malformed.
inline std::optional<Cidr> parse_cidr(const std::string& text) {
  const auto slash = text.find('/');
  const auto base = parse_address(text.substr(0, slash));
  if (!base) return std::nullopt;
  const int max = base->v4 ? 32 : 128;
  int bits = max;
  if (slash != std::string::npos) {
    const std::string len = text.substr(slash + 1);
    if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    bits = std::stoi(len);
    if (bits > max) return std::nullopt;
  }
  return Cidr{*base, base->v4 ? bits + 96 : bits};
}

// Why an address is not a public unicast one, or nullopt when it is.
inline std::optional<std::string> non_public_reason(const Address& a) {
  struct Range {
    const char* cidr;
    const char* what;
  };
  static const Range ranges[] = {
      {"0.0.0.0/8", "an unspecified/\"this network\" address"},
      {"10.0.0.0/8", "a private address"},
      {"100.64.0.0/10", "a carrier-grade NAT address"},
      {"127.0.0.0/8", "a loopback address"},
      {"169.254.0.0/16", "a link-local address"},
      {"172.16.0.0/12", "a private address"},
      {"192.0.0.0/24", "an IETF protocol address"},
      {"192.168.0.0/16", "a private address"},
      {"198.18.0.0/15", "a benchmarking address"},
      {"224.0.0.0/4", "a multicast address"},
      {"240.0.0.0/4", "a reserved address"},
      {"::/128", "the unspecified address"},
      {"::1/128", "a loopback address"},
      {"fc00::/7", "a unique local (private) address"},
      {"fe80::/10", "a link-local address"},
      {"ff00::/8", "a multicast address"},
      {"64:ff9b::/96", "a NAT64 address"},
  };
  for (const auto& r : ranges) {
    if (parse_cidr(r.cidr)->contains(a)) return std::string(r.what);
  }
  return std::nullopt;
}

inline bool allowed_by(const std::vector<Cidr>& allow, const Address& a) {
  for (const auto& c : allow) {
    if (c.contains(a)) return true;
  }
  return false;
}

}  // namespace webhook
