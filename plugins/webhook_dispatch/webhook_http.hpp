// webhook_http.hpp: the pure rules of a webhook delivery (signature, what an
// HTTP answer means, Retry-After), apart from I/O so tests can call them.
#pragma once

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>

#include <jobhost_plugins/hex.hpp>

namespace webhook {

inline std::string hmac_sha256_hex(std::string_view key, std::string_view message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), mac, &len);
  return jobhost_plugins::hex(mac, len);
}

// X-Jobhost-Signature: the timestamp is inside the signed text, so a captured
// request cannot be replayed later under a fresh timestamp.
inline std::string signature_header(std::string_view secret, const std::string& timestamp, std::string_view body) {
  std::string signed_text = timestamp + ".";
  signed_text.append(body);
  return "t=" + timestamp + ",v1=" + hmac_sha256_hex(secret, signed_text);
}

enum class Verdict { kDelivered, kRetry, kPermanent };

// 2xx delivered. 408 (request timeout) and 429 (too many requests) say "later",
// as does every 5xx. Other 4xx will not change by resending; a 3xx is not
// followed, since its target was never checked against the address policy.
inline Verdict classify(long status) {
  if (status >= 200 && status < 300) return Verdict::kDelivered;
  if (status == 408 || status == 429 || status >= 500) return Verdict::kRetry;
  return Verdict::kPermanent;
}

// Milliseconds a Retry-After value asks for, from `now` (Unix seconds): either
// delay-seconds or an HTTP date. nullopt when absent or unreadable. A huge
// number of seconds saturates instead of overflowing; the caller caps it.
inline std::optional<long long> retry_after_ms(std::string_view value, std::time_t now) {
  const auto first = value.find_first_not_of(" \t");
  if (first == std::string_view::npos) return std::nullopt;
  value = value.substr(first, value.find_last_not_of(" \t\r\n") - first + 1);
  if (value.find_first_not_of("0123456789") == std::string_view::npos) {
    constexpr long long kMaxSeconds = 100LL * 365 * 24 * 3600;
    long long seconds = 0;
    for (const char c : value) {
      seconds = std::min(kMaxSeconds, seconds * 10 + (c - '0'));
    }
    return seconds * 1000;
  }
  // An HTTP date always names its day and month; curl_getdate alone would
  // also read "-5" or "12:00" as a time.
  if (std::none_of(value.begin(), value.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); })) {
    return std::nullopt;
  }
  const std::time_t when = curl_getdate(std::string(value).c_str(), nullptr);
  if (when < 0) return std::nullopt;
  return std::max<long long>(0, (static_cast<long long>(when) - now) * 1000LL);
}

// A header value built from a payload field must not carry CR, LF or other
// control characters, or the field could add headers of its own.
inline bool header_safe(std::string_view text) {
  return std::none_of(text.begin(), text.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

}  // namespace webhook
