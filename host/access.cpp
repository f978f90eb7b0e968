// access.cpp: the admin API's access rules (see access.hpp).
#include "access.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>

namespace jobhost {
namespace {

constexpr std::string_view kBearer = "Bearer ";

std::array<unsigned char, 32> digest_of(std::string_view text) {
  std::array<unsigned char, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out.data());
  return out;
}

bool has_role(const std::vector<ApiToken>& tokens, ApiToken::Role role) {
  return std::any_of(tokens.begin(), tokens.end(), [&](const ApiToken& t) { return t.role == role; });
}

}  // namespace

AccessPolicy::AccessPolicy(const std::vector<ApiToken>& tokens)
    : reads_protected_(has_role(tokens, ApiToken::Role::kRead)),
      metrics_protected_(has_role(tokens, ApiToken::Role::kMetrics)),
      writes_enabled_(has_role(tokens, ApiToken::Role::kWrite)) {
  for (const ApiToken& t : tokens) entries_.push_back({t.name, t.role, digest_of(t.token)});
}

const AccessPolicy::Entry* AccessPolicy::match(std::string_view authorization) const {
  if (authorization.substr(0, kBearer.size()) != kBearer) return nullptr;
  const Digest given = digest_of(authorization.substr(kBearer.size()));
  const Entry* found = nullptr;
  for (const Entry& e : entries_) {  // no early exit: every token is compared
    const bool same = CRYPTO_memcmp(given.data(), e.digest.data(), given.size()) == 0;
    if (same && found == nullptr) found = &e;
  }
  return found;
}

std::optional<std::string> AccessPolicy::identify(std::string_view authorization) const {
  if (const Entry* e = match(authorization)) return e->name;
  return std::nullopt;
}

std::string AccessPolicy::check(RouteClass route, std::string_view authorization) const {
  const bool open = route == RouteClass::kProbe || route == RouteClass::kPublic || (route == RouteClass::kMetrics && !metrics_protected_) ||
                    (route == RouteClass::kRead && !reads_protected_);
  const Entry* who = authorization.empty() ? nullptr : match(authorization);
  if (open) return who ? who->name : "anonymous";
  if (route == RouteClass::kWrite && !writes_enabled_) {
    throw AccessDenied(403, "writes are disabled: no api.token (or api.tokens entry with role write) is configured");
  }
  if (authorization.empty()) throw AccessDenied(401, "missing Authorization: Bearer <token>");
  if (authorization.substr(0, kBearer.size()) != kBearer) {
    throw AccessDenied(401, "the Authorization header must be \"Bearer <token>\"");
  }
  if (!who) throw AccessDenied(403, "wrong token");
  const bool allowed = who->role == ApiToken::Role::kWrite ||
                       (route == RouteClass::kRead && who->role == ApiToken::Role::kRead) ||
                       (route == RouteClass::kMetrics);
  if (!allowed) {
    throw AccessDenied(403, "the token " + who->name + " may not " +
                                (route == RouteClass::kWrite ? "write (its role is read)" : "read jobs (it is for /metrics)"));
  }
  return who->name;
}

}  // namespace jobhost
