// address_policy.hpp: which IP addresses a plugin may connect to for a URL a
// tenant gave (webhook targets, import sources).
//
// Such a URL must not reach inside the platform's network: private, loopback, link-local (cloud metadata at 169.254.169.254),
// unspecified, multicast and other non-public ranges are refused unless an
// operator allow-lists them (settings.allow_cidrs). IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) are judged as the IPv4 address they carry.
#pragma once

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace jobhost_plugins::net {

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

// Resolves the URL's host and checks every address it has; returns why the
// target is refused, or nullopt and the CURLOPT_RESOLVE entry ("host:port:addr")
// that pins the connection to the first checked address, so DNS cannot answer
// differently when curl connects (empty for an IPv6 literal host: nothing to
// pin). Throws std::runtime_error when the name does not resolve (a DNS failure
// may pass: the caller retries).
inline std::optional<std::string> pin_target(const std::string& url, const std::vector<Cidr>& allow,
                                             const char* allow_setting, std::string& resolve) {
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(), curl_url_cleanup);
  if (curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return "'" + url + "' is not a valid URL";
  const auto part = [&](CURLUPart which, unsigned flags) -> std::optional<std::string> {
    char* text = nullptr;
    if (curl_url_get(u.get(), which, &text, flags) != CURLUE_OK) return std::nullopt;
    std::string out = text;
    curl_free(text);
    return out;
  };
  const auto scheme = part(CURLUPART_SCHEME, 0);
  if (!scheme || (*scheme != "http" && *scheme != "https")) return "the URL must be http or https: " + url;
  const auto host = part(CURLUPART_HOST, 0);
  const auto port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!host || !port) return "no host or port in " + url;
  const std::string bare = host->size() > 2 && host->front() == '[' ? host->substr(1, host->size() - 2) : *host;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int err = getaddrinfo(bare.c_str(), port->c_str(), &hints, &found); err != 0) {
    throw std::runtime_error("cannot resolve " + bare + ": " + gai_strerror(err));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, freeaddrinfo);
  std::string first;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    char text[INET6_ADDRSTRLEN] = {0};
    const void* raw = a->ai_family == AF_INET
                          ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                          : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    inet_ntop(a->ai_family, raw, text, sizeof text);
    const auto addr = parse_address(text);
    if (!addr) continue;
    if (const auto why = non_public_reason(*addr); why && !allowed_by(allow, *addr)) {
      return "refused to connect to " + bare + " (" + text + "): " + *why + " (allow it with the plugin's settings." +
             allow_setting + ")";
    }
    if (first.empty()) first = a->ai_family == AF_INET6 ? "[" + std::string(text) + "]" : std::string(text);
  }
  if (first.empty()) return bare + " has no usable address";
  // An IPv6 literal needs no pin (no DNS is asked), and libcurl 7.88 cannot
  // parse a CURLOPT_RESOLVE entry whose host has colons: it would fail every
  // transfer. Callers skip CURLOPT_RESOLVE when the entry is empty.
  resolve = bare.find(':') != std::string::npos ? std::string() : bare + ":" + *port + ":" + first;
  return std::nullopt;
}

}  // namespace jobhost_plugins::net
