// jobhost_plugins/bounce_kind.hpp: the one rule for what a failed delivery
// says about the ADDRESS (DESIGN §11), shared by bounce.process (returned
// DSNs) and email.send (a relay refusing RCPT TO with 5xx).
//
//   bounce_kind("5.1.1", 550, "")                      == "hard"   unknown user
//   bounce_kind("5.7.1", 554, "blocked using zen...")   == "soft"   our fault, not theirs
//   bounce_kind("", 550, "User unknown in local table") == "hard"   text when no code says it
//
// "hard" means the address is bad (suppress at once); "soft" means the
// delivery failed for a reason that may pass or that is the sender's own
// (full mailbox, 4.x.x, 5.7.x policy and spam refusals): counted, suppressed
// only after a limit. "unknown" when nothing says which. bounce_kind never
// answers "complaint" or "auto_reply": those come from what the message is
// (an ARF report, an RFC 3834 auto-reply), not from a status code.
//
// Pure, no allocation beyond the answer; also the helpers that find an RFC
// 3463 status ("5.1.1") or an SMTP reply code (550) inside free text.
#pragma once

#include <cctype>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost_plugins {

// The values of app.email_bounces.kind (its CHECK constraint lists the same).
inline constexpr std::string_view kBounceHard = "hard";
inline constexpr std::string_view kBounceSoft = "soft";
inline constexpr std::string_view kBounceComplaint = "complaint";
inline constexpr std::string_view kBounceAutoReply = "auto_reply";
inline constexpr std::string_view kBounceUnknown = "unknown";

// An RFC 3463 enhanced status code: class.subject.detail.
struct StatusCode {
  int klass = 0;  // 2 success, 4 persistent transient, 5 permanent
  int subject = 0;
  int detail = 0;
};

namespace bounce_detail {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Digits at s[i...], 1 to max_digits of them; advances i. -1 when none.
inline int read_number(std::string_view s, size_t& i, size_t max_digits) {
  size_t n = 0;
  int v = 0;
  while (i < s.size() && is_digit(s[i]) && n < max_digits) {
    v = v * 10 + (s[i] - '0');
    ++i;
    ++n;
  }
  if (n == 0 || (i < s.size() && is_digit(s[i]))) return -1;
  return v;
}

// A code starting exactly at s[i], ending at a non-digit; advances i past it.
inline std::optional<StatusCode> status_at(std::string_view s, size_t& i) {
  if (i >= s.size() || (s[i] != '2' && s[i] != '4' && s[i] != '5')) return std::nullopt;
  StatusCode code;
  code.klass = s[i] - '0';
  size_t j = i + 1;
  if (j >= s.size() || s[j] != '.') return std::nullopt;
  ++j;
  if ((code.subject = read_number(s, j, 3)) < 0) return std::nullopt;
  if (j >= s.size() || s[j] != '.') return std::nullopt;
  ++j;
  if ((code.detail = read_number(s, j, 3)) < 0) return std::nullopt;
  // "5.1.1.4" is an IP address or a version, not a status.
  if (j + 1 < s.size() && s[j] == '.' && is_digit(s[j + 1])) return std::nullopt;
  i = j;
  return code;
}

inline char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Case-insensitive search; needle is lower case.
inline bool contains(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && lower(hay[i + k]) == needle[k]) ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

template <size_t N>
bool contains_any(std::string_view hay, const std::string_view (&needles)[N]) {
  for (std::string_view n : needles) {
    if (contains(hay, n)) return true;
  }
  return false;
}

// Phrases that put the fault on the sender or on the moment: policy, spam,
// reputation, rate, a full mailbox, "try again". Checked before the hard
// phrases: when a refusal says both, keeping the address is the cheap error.
inline constexpr std::string_view kSoftPhrases[] = {
    "mailbox full", "mailbox is full", "inbox is full", "over quota", "quota exceeded",
    "exceeded storage", "exceeds storage", "storage allocation", "insufficient system storage",
    "out of storage", "mailbox size limit", "try again", "temporar", "spam", "blocked",
    "blacklist", "blocklist", "block list", "policy", "reputation", "rate limit", "too many",
    "relay access denied", "relaying denied", "relay not permitted", "not permitted to relay",
    "dmarc", "spf", "dkim", "authentication", "message too large", "message size", "content rejected",
    "greylist", "throttl"};

// Phrases that say the address itself is bad: no such user, no such domain,
// account disabled or gone, as real MTAs word them.
inline constexpr std::string_view kHardPhrases[] = {
    "user unknown", "unknown user", "no such user", "user not found", "unknown recipient",
    "recipient unknown", "recipient not found", "no such recipient", "invalid recipient",
    "recipient address rejected: user", "unknown local part", "unknown local-part", "unrouteable address",
    "unroutable address", "no mailbox here", "no such mailbox", "mailbox not found", "mailbox unknown",
    "mailbox does not exist", "mailbox doesn't exist", "address does not exist", "account does not exist",
    "does not exist", "doesn't exist", "doesn't have a", "not a valid mailbox", "invalid mailbox",
    "no such domain", "domain not found", "host or domain name not found", "domain does not exist",
    "non-existent host", "nonexistent domain", "null mx", "account disabled", "account has been disabled",
    "account is disabled", "mailbox disabled", "mailbox is disabled", "mailbox has been disabled",
    "account inactive", "inactive account", "deactivated", "no longer active", "no longer available",
    "mailbox has moved", "recipientnotfound", "addressed to an unknown", "bad destination mailbox"};

// What the text alone says: hard, soft, or nothing.
inline std::optional<std::string_view> kind_from_text(std::string_view text) {
  if (contains_any(text, kSoftPhrases)) return kBounceSoft;
  if (contains_any(text, kHardPhrases)) return kBounceHard;
  return std::nullopt;
}

// A specific enhanced code (not a ".0" catch-all) decides on its own.
inline std::optional<std::string_view> kind_from_status(const StatusCode& s) {
  if (s.klass == 4) return kBounceSoft;
  if (s.klass != 5) return std::nullopt;
  switch (s.subject) {
    case 1:  // addressing
      switch (s.detail) {
        case 1:   // bad destination mailbox address
        case 2:   // bad destination system address (no such domain)
        case 3:   // bad destination mailbox address syntax
        case 6:   // destination mailbox has moved
        case 10:  // RFC 7505 null MX; Office 365: recipient not found
          return kBounceHard;
        case 0:
          return std::nullopt;  // "other address status": the text decides
        default:
          return kBounceSoft;  // 5.1.4 ambiguous, 5.1.7/8 the sender's address ...
      }
    case 2:  // mailbox
      if (s.detail == 1) return kBounceHard;  // mailbox disabled
      if (s.detail == 0) return std::nullopt;
      return kBounceSoft;  // 5.2.2 full, 5.2.3 too long, 5.2.4 list expansion
    case 4:  // network and routing
      if (s.detail == 4) return kBounceHard;  // unable to route: no such domain
      if (s.detail == 0) return std::nullopt;
      return kBounceSoft;  // 5.4.7 expired, 5.4.6 loop, 5.4.1 no answer
    case 7:  // security and policy: the sender's problem, never the address's
      return kBounceSoft;
    default:
      if (s.detail == 0) return std::nullopt;
      return kBounceSoft;  // mail system, protocol, content
  }
}

}  // namespace bounce_detail

// An RFC 3463 code at the start of s (blanks skipped), e.g. "5.1.1" or
// "4.2.2 (mailbox full)". Class 2, 4 or 5; subject and detail of 1-3 digits.
inline std::optional<StatusCode> parse_status(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return bounce_detail::status_at(s, i);
}

// The first enhanced status code inside free text ("... said: 550 5.1.1
// <a@b>: User unknown", qmail's "(#5.1.1)"), not part of an IP address.
inline std::optional<StatusCode> find_status(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (i > 0 && (bounce_detail::is_digit(text[i - 1]) || text[i - 1] == '.')) continue;
    size_t j = i;
    if (auto code = bounce_detail::status_at(text, j)) return code;
  }
  return std::nullopt;
}

inline std::string to_string(const StatusCode& s) {
  return std::to_string(s.klass) + "." + std::to_string(s.subject) + "." + std::to_string(s.detail);
}

// The SMTP reply code of a reply or a Diagnostic-Code: the first word of three
// digits, 200-599, followed by a blank, a hyphen or the end ("smtp; 550 5.1.1
// ...", "550-5.1.1 The email account ...", "... said: 554 delivery error").
inline std::optional<int> find_reply_code(std::string_view text) {
  using bounce_detail::is_digit;
  for (size_t i = 0; i + 3 <= text.size(); ++i) {
    if (i > 0 && (std::isalnum(static_cast<unsigned char>(text[i - 1])) || text[i - 1] == '.' ||
                  text[i - 1] == '#' || text[i - 1] == '-')) {
      continue;
    }
    if (text[i] < '2' || text[i] > '5' || !is_digit(text[i + 1]) || !is_digit(text[i + 2])) continue;
    if (i + 3 < text.size() && text[i + 3] != ' ' && text[i + 3] != '-' && text[i + 3] != '\t') continue;
    if (text[i + 1] > '5') continue;
    return (text[i] - '0') * 100 + (text[i + 1] - '0') * 10 + (text[i + 2] - '0');
  }
  return std::nullopt;
}

// The kind of one failed recipient. status is the RFC 3463 code as text
// ("5.1.1", "" when none), reply_code the SMTP reply when known, diagnostic
// the refusal's text. The most specific evidence wins: a specific enhanced
// code, then (for a catch-all code like 5.0.0 or none) the wording, then the
// class of the code or reply: 4 soft, 5 soft too when nothing says the
// address is bad. "unknown" when there is neither code nor telling text.
inline std::string bounce_kind(std::string_view status, std::optional<int> reply_code,
                               std::string_view diagnostic) {
  std::optional<StatusCode> code = parse_status(status);
  if (!code) code = find_status(diagnostic);
  if (code) {
    if (auto kind = bounce_detail::kind_from_status(*code)) return std::string(*kind);
  }
  if (!reply_code) reply_code = find_reply_code(diagnostic);
  const int klass = code ? code->klass : reply_code ? *reply_code / 100 : 0;
  if (klass == 4) return std::string(kBounceSoft);
  if (auto kind = bounce_detail::kind_from_text(diagnostic)) return std::string(*kind);
  if (klass == 5) return std::string(reply_code == 551 ? kBounceHard : kBounceSoft);  // 551 user not local
  return std::string(kBounceUnknown);
}

}  // namespace jobhost_plugins
