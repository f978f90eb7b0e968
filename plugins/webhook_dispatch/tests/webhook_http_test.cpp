// The delivery rules (pure logic): signature, what each status means, Retry-After.
#include <catch2/catch.hpp>

#include "webhook_http.hpp"

using webhook::Verdict;

TEST_CASE("webhook signature: HMAC-SHA256 of timestamp, dot and body, in hex") {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
  CHECK(webhook::hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(webhook::signature_header("Jefe", "what do ya want for", " nothing?") ==
        "t=what do ya want for,v1=" + webhook::hmac_sha256_hex("Jefe", "what do ya want for. nothing?"));
  CHECK(webhook::signature_header("k", "1700000000", "{}") != webhook::signature_header("k", "1700000001", "{}"));
}

TEST_CASE("webhook answers: 2xx delivered, 408/429/5xx retried, other 4xx and 3xx permanent") {
  for (long s : {200L, 201L, 202L, 204L, 299L}) CHECK(webhook::classify(s) == Verdict::kDelivered);
  for (long s : {408L, 429L, 500L, 502L, 503L, 504L, 599L}) CHECK(webhook::classify(s) == Verdict::kRetry);
  for (long s : {301L, 302L, 307L, 400L, 401L, 403L, 404L, 405L, 409L, 410L, 413L, 422L}) {
    INFO(s);
    CHECK(webhook::classify(s) == Verdict::kPermanent);
  }
}

TEST_CASE("webhook Retry-After: seconds or an HTTP date, anything else ignored") {
  const std::time_t now = 1700000000;  // Tue, 14 Nov 2023 22:13:20 GMT
  CHECK(webhook::retry_after_ms("120", now) == 120000);
  CHECK(webhook::retry_after_ms(" 0 ", now) == 0);
  CHECK(webhook::retry_after_ms("Tue, 14 Nov 2023 22:14:20 GMT", now) == 60000);
  // A date in the past means "now".
  CHECK(webhook::retry_after_ms("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0);
  // Absurdly large values saturate (the plugin caps them) instead of overflowing.
  CHECK(*webhook::retry_after_ms("99999999999999999999999", now) >= 3600LL * 1000 * 24 * 365);
  for (const char* bad : {"", "   ", "soon", "-5", "12:00", "1.5"}) {
    INFO(bad);
    CHECK_FALSE(webhook::retry_after_ms(bad, now).has_value());
  }
}

TEST_CASE("webhook header values: control characters are refused") {
  CHECK(webhook::header_safe("import.completed"));
  CHECK(webhook::header_safe("ev-1 with spaces and ünïcödé"));
  CHECK_FALSE(webhook::header_safe("x\r\nX-Injected: 1"));
  CHECK_FALSE(webhook::header_safe("x\ny"));
  CHECK_FALSE(webhook::header_safe(std::string("x\0y", 3)));
}
