// access.hpp: who may call which admin API route (DESIGN §12).
//
//   probes   /healthz, /readyz: always open
//   metrics  /metrics: open unless api.metrics_token is set; then that token,
//            or any read or write token
//   read     every GET of /api/v1 (payloads hold personal data): open unless
//            a read token is configured (api.read_token or an api.tokens
//            entry with role read); then a read or write token
//   write    every POST: a write token (api.token, or role write); 403 for all
//            writes when none is configured
//
// Missing or malformed Authorization: 401; a token that matches none, or one
// whose role does not reach the route: 403. Tokens are compared through their
// SHA-256 digests in constant time, every configured token each time, so
// neither a token's length nor which one matched shows in the timing; no
// token or digest is ever logged or put in a message.
#pragma once

#include <array>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"

namespace jobhost {

// kPublic: open to anyone, as a probe, for routes whose request carries its
// own credential (a signed one-click unsubscribe link).
enum class RouteClass { kProbe, kPublic, kMetrics, kRead, kWrite };

// An access refused: the HTTP status (401 or 403) and why.
struct AccessDenied : std::runtime_error {
  AccessDenied(int s, const std::string& why) : std::runtime_error(why), status(s) {}
  int status;
};

class AccessPolicy {
 public:
  explicit AccessPolicy(const std::vector<ApiToken>& tokens);

  // The name of the configured token an Authorization header value
  // ("Bearer T") carries; nullopt when none matches.
  std::optional<std::string> identify(std::string_view authorization) const;

  // Who calls (the token's name; "anonymous" on an open route without a
  // token). Throws AccessDenied.
  std::string check(RouteClass route, std::string_view authorization) const;

  bool reads_protected() const { return reads_protected_; }

 private:
  using Digest = std::array<unsigned char, 32>;
  struct Entry {
    std::string name;
    ApiToken::Role role;
    Digest digest;
  };
  const Entry* match(std::string_view authorization) const;

  std::vector<Entry> entries_;
  bool reads_protected_ = false;
  bool metrics_protected_ = false;
  bool writes_enabled_ = false;
};

}  // namespace jobhost
