// access_test.cpp: the admin API's access rules (host/access.hpp) and the
// config keys they come from: which route class each token reaches, 401 vs
// 403, and that no message ever carries a token.
#include "access.hpp"

#include <catch2/catch.hpp>

#include "config.hpp"

using jobhost::AccessDenied;
using jobhost::AccessPolicy;
using jobhost::ApiToken;
using jobhost::RouteClass;

namespace {

const std::string kBase =
    "postgres: { url: \"postgres://db/jobs\" }\n"
    "redis: { url: \"redis://cache:6379\" }\n";

std::vector<ApiToken> tokens_of(const std::string& api_yaml) {
  return jobhost::parse_config(kBase + "api:\n" + api_yaml, "/etc/jobhost/t.yaml").api_access;
}

// The status a call is refused with, or 0 when it is let through.
int refusal(const AccessPolicy& p, RouteClass r, const std::string& authorization) {
  try {
    p.check(r, authorization);
    return 0;
  } catch (const AccessDenied& e) {
    return e.status;
  }
}

std::string config_error(const std::string& api_yaml) {
  try {
    tokens_of(api_yaml);
  } catch (const jobhost::ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("access: with a read token, reads need it, metrics stay open, writes need a write token") {
  const AccessPolicy p(tokens_of(
      "  token: write-secret-1\n"
      "  read_token: read-secret-1\n"
      "  tokens:\n"
      "    - { name: alice, token: alice-secret-1, role: write }\n"
      "    - { name: viewer, token: viewer-secret-1 }\n"));
  CHECK(p.reads_protected());
  CHECK(refusal(p, RouteClass::kProbe, "") == 0);
  CHECK(refusal(p, RouteClass::kMetrics, "") == 0);
  CHECK(refusal(p, RouteClass::kRead, "") == 401);
  CHECK(refusal(p, RouteClass::kRead, "Basic abc") == 401);
  CHECK(refusal(p, RouteClass::kRead, "Bearer nope") == 403);
  CHECK(refusal(p, RouteClass::kRead, "Bearer read-secret-1") == 0);
  CHECK(refusal(p, RouteClass::kRead, "Bearer viewer-secret-1") == 0);
  CHECK(refusal(p, RouteClass::kRead, "Bearer alice-secret-1") == 0);
  CHECK(refusal(p, RouteClass::kWrite, "") == 401);
  CHECK(refusal(p, RouteClass::kWrite, "Bearer read-secret-1") == 403);
  CHECK(refusal(p, RouteClass::kWrite, "Bearer viewer-secret-1") == 403);
  CHECK(refusal(p, RouteClass::kWrite, "Bearer write-secret-12") == 403);  // a longer one
  CHECK(refusal(p, RouteClass::kWrite, "Bearer write-secret-") == 403);    // a prefix
  CHECK(p.check(RouteClass::kWrite, "Bearer write-secret-1") == "api.token");
  CHECK(p.check(RouteClass::kWrite, "Bearer alice-secret-1") == "alice");
  CHECK(p.check(RouteClass::kRead, "Bearer viewer-secret-1") == "viewer");
  CHECK(p.check(RouteClass::kRead, "Bearer read-secret-1") == "api.read_token");
  CHECK(p.identify("Bearer nope") == std::nullopt);
}

TEST_CASE("access: without a read token reads are open, without a write token writes are refused") {
  const AccessPolicy open(tokens_of("  listen: \"127.0.0.1:0\"\n"));
  CHECK_FALSE(open.reads_protected());
  CHECK(refusal(open, RouteClass::kRead, "") == 0);
  CHECK(open.check(RouteClass::kRead, "") == "anonymous");
  CHECK(refusal(open, RouteClass::kWrite, "Bearer anything") == 403);
  CHECK_THROWS_WITH(open.check(RouteClass::kWrite, ""), Catch::Matchers::StartsWith("writes are disabled"));
  CHECK(refusal(open, RouteClass::kMetrics, "") == 0);
}

TEST_CASE("access: api.metrics_token guards /metrics only, and reaches nothing else") {
  const AccessPolicy p(tokens_of("  token: w-secret\n  metrics_token: m-secret\n"));
  CHECK(refusal(p, RouteClass::kMetrics, "") == 401);
  CHECK(refusal(p, RouteClass::kMetrics, "Bearer x") == 403);
  CHECK(p.check(RouteClass::kMetrics, "Bearer m-secret") == "api.metrics_token");
  CHECK(p.check(RouteClass::kMetrics, "Bearer w-secret") == "api.token");
  CHECK(refusal(p, RouteClass::kRead, "") == 0);  // no read token: reads stay open
  CHECK(refusal(p, RouteClass::kWrite, "Bearer m-secret") == 403);
  CHECK(refusal(p, RouteClass::kProbe, "") == 0);
}

TEST_CASE("access: refused messages and config errors never contain a token") {
  const AccessPolicy p(tokens_of("  token: w-secret-2\n  tokens: [{ name: viewer, token: viewer-secret-2, role: read }]\n"));
  try {
    p.check(RouteClass::kWrite, "Bearer viewer-secret-2");
    FAIL("a read token wrote");
  } catch (const AccessDenied& e) {
    CHECK(std::string(e.what()).find("viewer-secret-2") == std::string::npos);
    CHECK_THAT(e.what(), Catch::Matchers::Contains("viewer"));
  }
  const std::string same = config_error(
      "  token: shared-secret-3\n"
      "  tokens: [{ name: ops, token: shared-secret-3, role: write }]\n");
  CHECK_THAT(same, Catch::Matchers::Contains("api.tokens[0].token: the same token as api.token"));
  CHECK(same.find("shared-secret-3") == std::string::npos);
  const std::string twice = config_error(
      "  tokens:\n"
      "    - { name: ops, token: a-secret-4, role: write }\n"
      "    - { name: ops, token: b-secret-4 }\n");
  CHECK_THAT(twice, Catch::Matchers::Contains("api.tokens[1].name: given twice"));
  const std::string role = config_error("  tokens: [{ name: ops, token: c-secret-5, role: admin }]\n");
  CHECK_THAT(role, Catch::Matchers::Contains("api.tokens[0].role: must be one of read, write"));
  CHECK(role.find("c-secret-5") == std::string::npos);
  CHECK_THAT(config_error("  tokens: [{ name: ops }]\n"), Catch::Matchers::Contains("api.tokens[0].token"));
}
