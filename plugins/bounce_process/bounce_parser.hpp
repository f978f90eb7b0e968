// bounce_parser.hpp: what one returned message says, as rows for
// app.email_bounces: which recipients failed, with which RFC 3463 status, SMTP
// reply code, diagnostic and kind (jobhost_plugins/bounce_kind.hpp), and which
// message of ours it answers (the job id behind Message-ID <job-id@jobhost>
// or a VERP address bounce+<job-id>@<verp_domain>).
//
// Formats understood (README "Bounce processing" lists them with examples):
//   - RFC 3464 DSNs (multipart/report; report-type=delivery-status, and the
//     RFC 6533 message/global-delivery-status), as Postfix, Sendmail, Exim 4.9x,
//     Gmail, Office 365 / Exchange, Amazon SES, Yahoo send them;
//   - RFC 5965 ARF feedback reports: kind "complaint";
//   - RFC 3834 auto-replies and the common out-of-office forms: kind
//     "auto_reply", never a bounce;
//   - the plain-text bounces of Exim, qmail (and Yahoo's qmail-style ones),
//     Postfix, Sendmail, Exchange 2007-2016, Office 365 and Gmail;
//   - Amazon SES bounce and complaint notifications (JSON, raw or in an SNS
//     envelope) as an ESP bridge drops them;
//   - anything else: kind "unknown", with a diagnostic saying why.
//
// Pure: bytes in, a Report out; Malformed (mime.hpp) when the bytes are not a
// mail message at all (binary, empty, truncated, over a limit).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mime.hpp"

namespace bounce {

struct Failure {
  std::string recipient;  // lower case; "" when the report names none
  std::string status;     // "5.1.1", "" when none
  std::optional<int> reply_code;
  std::string diagnostic;  // one line, at most kMaxDiagnostic bytes
  std::string kind;        // hard, soft, complaint, auto_reply, unknown
};

struct Report {
  std::string format;             // the reader that understood it: "rfc3464", "arf", "exim", ...
  std::vector<Failure> failures;  // never empty
  std::string message_id;         // the original's Message-ID, "<...>", "" when not found
  std::string job_id;             // a uuid, "" when nothing names one of our messages
  std::string matched_by;         // "verp", "message-id" or ""
};

inline constexpr size_t kMaxDiagnostic = 1000;

// Throws Malformed.
Report parse_bounce(std::string_view raw, const Limits& limits = {});

// The job id in "<uuid@jobhost>" / "bounce+uuid@" anywhere in text, "" when none.
std::string find_jobhost_message_id(std::string_view text);  // returns "<uuid@jobhost>"
std::string find_verp_job_id(std::string_view text);         // returns the uuid

}  // namespace bounce
