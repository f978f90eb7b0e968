// jobhost_plugins/bounce_kind.hpp: what a failed delivery says about the
// address, and the status / reply codes found inside free text.
#include <catch2/catch.hpp>

#include <jobhost_plugins/bounce_kind.hpp>

using jobhost_plugins::bounce_kind;
using jobhost_plugins::find_reply_code;
using jobhost_plugins::find_status;
using jobhost_plugins::parse_status;

TEST_CASE("bounce kind: a bad address is hard: unknown user, no such domain, disabled, moved, null MX") {
  for (const char* status : {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1", "5.4.4"}) {
    INFO(status);
    CHECK(bounce_kind(status, 550, "") == "hard");
    CHECK(bounce_kind(status, std::nullopt, "") == "hard");
  }
}

TEST_CASE("bounce kind: 5.7.x policy and spam refusals are soft, whatever the text says") {
  CHECK(bounce_kind("5.7.1", 554, "Service unavailable; Client host blocked using zen.spamhaus.org") == "soft");
  CHECK(bounce_kind("5.7.1", 550, "") == "soft");
  CHECK(bounce_kind("5.7.26", 550, "Unauthenticated email is not accepted (DMARC)") == "soft");
  CHECK(bounce_kind("5.7.1", 550, "user unknown") == "soft");
}

TEST_CASE("bounce kind: transient failures and full mailboxes are soft") {
  CHECK(bounce_kind("4.2.2", 452, "mailbox full") == "soft");
  CHECK(bounce_kind("5.2.2", 552, "Mailbox full") == "soft");
  CHECK(bounce_kind("4.1.1", 450, "Recipient address rejected: unverified address") == "soft");
  CHECK(bounce_kind("4.4.7", std::nullopt, "delivery time expired") == "soft");
  CHECK(bounce_kind("", 421, "") == "soft");
  CHECK(bounce_kind("5.2.3", 552, "") == "soft");
  CHECK(bounce_kind("5.4.7", std::nullopt, "") == "soft");
}

TEST_CASE("bounce kind: a catch-all code or none lets the wording decide") {
  CHECK(bounce_kind("5.0.0", 550, "<a@b.example>: Recipient address rejected: User unknown in local recipient table") ==
        "hard");
  CHECK(bounce_kind("", 550, "Requested action not taken: mailbox unavailable (no such user)") == "hard");
  CHECK(bounce_kind("", 554, "delivery error: dd This user doesn't have a yahoo.com account") == "hard");
  CHECK(bounce_kind("", std::nullopt, "Sorry, no mailbox here by that name. (#5.1.1)") == "hard");
  CHECK(bounce_kind("", 552, "Requested mail action aborted: exceeded storage allocation") == "soft");
  CHECK(bounce_kind("5.0.0", 550, "Host or domain name not found. Name service error: Host not found") == "hard");
  // Postfix's wording for a DNS failure that may pass: "try again" outweighs "not found".
  CHECK(bounce_kind("", std::nullopt,
                    "Host or domain name not found. Name service error for name=b.example type=MX: Host not "
                    "found, try again") == "soft");
  CHECK(bounce_kind("5.0.0", 550, "rejected") == "soft");  // failed, but nothing says the address is bad
  CHECK(bounce_kind("", 551, "User not local") == "hard");
}

TEST_CASE("bounce kind: with no code and no telling text it is unknown") {
  CHECK(bounce_kind("", std::nullopt, "") == "unknown");
  CHECK(bounce_kind("", std::nullopt, "your message could not be delivered") == "unknown");
  CHECK(bounce_kind("2.0.0", 250, "ok") == "unknown");
  CHECK(bounce_kind("garbage", std::nullopt, "") == "unknown");
}

TEST_CASE("bounce kind: status codes are found in text, not in IP addresses or versions") {
  CHECK(jobhost_plugins::to_string(*parse_status(" 5.1.1 (bad destination mailbox)")) == "5.1.1");
  CHECK(jobhost_plugins::to_string(*parse_status("4.7.650")) == "4.7.650");
  CHECK_FALSE(parse_status("5.1"));
  CHECK_FALSE(parse_status("3.1.1"));
  CHECK_FALSE(parse_status("5.1111.1"));
  CHECK(jobhost_plugins::to_string(*find_status("host mx[192.5.1.1] said: 550 5.1.1 <a@b>: no")) == "5.1.1");
  CHECK(jobhost_plugins::to_string(*find_status("no mailbox here by that name. (#5.1.1)")) == "5.1.1");
  CHECK_FALSE(find_status("from 10.5.1.1 version 2.5.1.4"));
  CHECK_FALSE(find_status(""));
}

TEST_CASE("bounce kind: reply codes are found at a reply's start or after said:") {
  CHECK(find_reply_code("smtp; 550 5.1.1 <a@b>: User unknown") == 550);
  CHECK(find_reply_code("550-5.1.1 The email account that you tried to reach does not exist") == 550);
  CHECK(find_reply_code("host mx.example[10.0.0.1] said: 554 delivery error: dd ...") == 554);
  CHECK(find_reply_code("452") == 452);
  CHECK_FALSE(find_reply_code("mailbox disabled (554.30)"));
  CHECK_FALSE(find_reply_code("port 2525 closed"));
  CHECK_FALSE(find_reply_code("error 600 here"));
  CHECK_FALSE(find_reply_code("#550 x"));
}
