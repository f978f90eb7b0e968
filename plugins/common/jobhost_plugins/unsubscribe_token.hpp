// jobhost_plugins/unsubscribe_token.hpp: the signed token of a one-click
// unsubscribe link (RFC 8058, DESIGN §11). email.send puts it in a campaign
// message's List-Unsubscribe URL; the admin API's POST /api/v1/unsubscribe/
// {token} checks it and suppresses the address. The token is the credential:
// it names the tenant, the address and the message, expires, and is signed
// with HMAC-SHA256 under a secret both sides are configured with.
//
//   v1.<tenant, base64url>.<address, base64url>.<message row>.<expires, unix s>.<HMAC, base64url>
//
// Only [A-Za-z0-9._-]: safe in a URL path and a mail header as it is.
#pragma once

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace jobhost_plugins::unsubscribe {

struct Claims {
  std::string tenant;
  std::string email;
  long long message_row = 0;  // app.email_messages.id
  std::int64_t expires = 0;   // unix seconds
};

namespace detail {

inline constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

inline std::string b64url(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kAlphabet[(acc >> bits) & 0x3f];
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 0x3f];
  return out;
}

inline std::optional<std::string> unb64url(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    if (c >= '0' && c <= '9') v = c - '0' + 52;
    if (c == '-') v = 62;
    if (c == '_') v = 63;
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

inline std::string mac(std::string_view secret, std::string_view text) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(text.data()),
       text.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

inline std::string signed_part(const Claims& c) {
  return "v1." + b64url(c.tenant) + "." + b64url(c.email) + "." + std::to_string(c.message_row) + "." +
         std::to_string(c.expires);
}

inline std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t at = 0;;) {
    const size_t dot = s.find('.', at);
    out.push_back(s.substr(at, dot == std::string_view::npos ? std::string_view::npos : dot - at));
    if (dot == std::string_view::npos) return out;
    at = dot + 1;
  }
}

inline std::optional<long long> digits(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace detail

inline std::string make(const Claims& c, std::string_view secret) {
  const std::string body = detail::signed_part(c);
  return body + "." + detail::b64url(detail::mac(secret, body));
}

// Why a token is refused, or the claims of a good one.
struct Checked {
  std::optional<Claims> claims;
  std::string problem;  // "" when claims is set
};

// Checks the signature (in constant time) and then the expiry against now.
inline Checked check(std::string_view token, std::string_view secret, std::time_t now) {
  if (token.size() > 2048) return {std::nullopt, "the unsubscribe token is too long"};
  const auto parts = detail::split(token);
  if (parts.size() != 6 || parts[0] != "v1") return {std::nullopt, "not an unsubscribe token"};
  const std::string body(token.substr(0, token.rfind('.')));
  const auto given = detail::unb64url(parts[5]);
  const std::string want = detail::mac(secret, body);
  if (!given || given->size() != want.size() || CRYPTO_memcmp(given->data(), want.data(), want.size()) != 0) {
    return {std::nullopt, "the unsubscribe token's signature does not match"};
  }
  Claims c;
  const auto tenant = detail::unb64url(parts[1]), email = detail::unb64url(parts[2]);
  const auto row = detail::digits(parts[3]), expires = detail::digits(parts[4]);
  if (!tenant || !email || !row || !expires || tenant->empty() || email->empty()) {
    return {std::nullopt, "not an unsubscribe token"};
  }
  if (*expires < now) return {std::nullopt, "the unsubscribe token has expired"};
  c.tenant = *tenant;
  c.email = *email;
  c.message_row = *row;
  c.expires = *expires;
  return {c, ""};
}

}  // namespace jobhost_plugins::unsubscribe
