// bounce_parser.cpp: see bounce_parser.hpp. The readers are tried from the
// most structured to the least: an SES notification, an ARF report, an RFC
// 3464 report, an auto-reply, the plain-text bounces of known MTAs, then a
// last look for a status code in a notice from a mailer daemon.
#include "bounce_parser.hpp"

#include <algorithm>
#include <cctype>
#include <functional>

#include <nlohmann/json.hpp>

#include <jobhost_plugins/bounce_kind.hpp>
#include <jobhost_plugins/email_address.hpp>

namespace bounce {

namespace {

using jobhost_plugins::bounce_kind;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool icontains(std::string_view hay, std::string_view needle_lower) {
  if (needle_lower.size() > hay.size()) return false;
  const auto it =
      std::search(hay.begin(), hay.end(), needle_lower.begin(), needle_lower.end(),
                  [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
  return it != hay.end();
}

bool istarts_with(std::string_view s, std::string_view prefix_lower) {
  return s.size() >= prefix_lower.size() && icontains(s.substr(0, prefix_lower.size()), prefix_lower);
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

// One line, blanks collapsed, at most kMaxDiagnostic bytes.
std::string one_line(std::string_view text) {
  std::string out;
  bool blank = false;
  for (char c : trim(text)) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (space) {
      blank = true;
      continue;
    }
    if (blank && !out.empty()) out += ' ';
    blank = false;
    if (static_cast<unsigned char>(c) < 32 || c == 127) c = '?';
    out += c;
    if (out.size() >= kMaxDiagnostic) break;
  }
  return out;
}

bool is_address_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-/=?^_`{|}~.@").find(c) != std::string_view::npos;
}

// The first thing shaped like local@domain.tld in text, lower-cased; "".
std::string first_address(std::string_view text) {
  for (size_t at = text.find('@'); at != std::string_view::npos; at = text.find('@', at + 1)) {
    size_t b = at, e = at + 1;
    while (b > 0 && is_address_char(text[b - 1]) && text[b - 1] != '@') --b;
    while (e < text.size() && is_address_char(text[e]) && text[e] != '@') ++e;
    std::string_view candidate = text.substr(b, e - b);
    while (!candidate.empty() && candidate.back() == '.') candidate.remove_suffix(1);
    const std::string address = jobhost_plugins::normalize_email(candidate);
    if (!jobhost_plugins::email_problem(address)) return address;
  }
  return {};
}

// "rfc822; user@example.com" -> the address.
std::string typed_address(std::string_view value) {
  const size_t semi = value.find(';');
  if (semi != std::string_view::npos) value.remove_prefix(semi + 1);
  const std::string a = first_address(value);
  return a.empty() ? jobhost_plugins::normalize_email(trim(value)) : a;
}

// "smtp; 550 5.1.1 ..." -> "550 5.1.1 ...".
std::string_view typed_text(std::string_view value) {
  const size_t semi = value.find(';');
  if (semi != std::string_view::npos && semi < 20 &&
      value.substr(0, semi).find(' ') == std::string_view::npos) {
    value.remove_prefix(semi + 1);
  }
  return trim(value);
}

bool is_uuid_at(std::string_view s, size_t i) {
  if (i + 36 > s.size()) return false;
  for (size_t k = 0; k < 36; ++k) {
    const char c = s[i + k];
    if (k == 8 || k == 13 || k == 18 || k == 23) {
      if (c != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return true;
}

// A finished failure: status from the code or the text, kind from both.
Failure make_failure(std::string recipient, std::string status, std::optional<int> reply,
                     std::string_view diag) {
  Failure f;
  f.recipient = std::move(recipient);
  f.diagnostic = one_line(diag);
  auto code = jobhost_plugins::parse_status(status);
  // A catch-all Status (5.0.0) says less than the code in its own diagnostic.
  if (auto in_text = jobhost_plugins::find_status(f.diagnostic);
      in_text && (!code || (code->subject == 0 && code->detail == 0 && in_text->klass == code->klass))) {
    code = in_text;
  }
  f.status = code ? jobhost_plugins::to_string(*code) : "";
  f.reply_code = reply ? reply : jobhost_plugins::find_reply_code(f.diagnostic);
  f.kind = bounce_kind(f.status, f.reply_code, f.diagnostic);
  return f;
}

Failure special(std::string recipient, std::string_view kind, std::string diagnostic) {
  Failure f;
  f.recipient = std::move(recipient);
  f.kind = std::string(kind);
  f.diagnostic = one_line(diagnostic);
  return f;
}

// ---- walking the tree ----

void walk(const Part& p, const std::function<void(const Part&)>& visit) {
  visit(p);
  for (const Part& c : p.children) walk(c, visit);
}

const Part* find_type(const Part& top, std::initializer_list<std::string_view> types) {
  const Part* found = nullptr;
  walk(top, [&](const Part& p) {
    if (found == nullptr && std::find(types.begin(), types.end(), p.type) != types.end()) found = &p;
  });
  return found;
}

std::vector<const Part*> enclosed_headers(const Part& top) {
  std::vector<const Part*> out;
  walk(top, [&](const Part& p) {
    if (p.enclosed) out.push_back(&p);
  });
  return out;
}

// Block tags become line breaks (the readers are line-based), inline ones a
// blank; the few entities an NDR uses become their characters.
std::string strip_html(std::string_view html) {
  std::string out;
  bool in_tag = false;
  for (size_t i = 0; i < html.size(); ++i) {
    const char c = html[i];
    if (c == '<') {
      in_tag = true;
      std::string_view name = html.substr(i + 1, 8);
      if (!name.empty() && name.front() == '/') name.remove_prefix(1);
      const bool inline_tag = istarts_with(name, "a ") || istarts_with(name, "a>") ||
                              istarts_with(name, "b>") || istarts_with(name, "span") ||
                              istarts_with(name, "strong") || istarts_with(name, "font") ||
                              istarts_with(name, "i>") || istarts_with(name, "em>");
      out += inline_tag ? ' ' : '\n';
    } else if (c == '>') {
      in_tag = false;
    } else if (!in_tag && c == '&') {
      static constexpr std::pair<std::string_view, char> kEntities[] = {
          {"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&#39;", '\''}, {"&nbsp;", ' '}};
      bool replaced = false;
      for (const auto& [name, ch] : kEntities) {
        if (html.compare(i, name.size(), name) == 0) {
          out += ch;
          i += name.size() - 1;
          replaced = true;
          break;
        }
      }
      if (!replaced) out += c;
    } else if (!in_tag) {
      out += c;
    }
  }
  return out;
}

// The words meant for people: the text/plain leaves of the message's own
// structure (an enclosed original's are never parsed), else its HTML.
std::string human_text(const Part& top) {
  std::string plain, html;
  walk(top, [&](const Part& p) {
    if (!p.children.empty() || p.enclosed) return;
    if (p.type == "text/plain") plain += p.body + "\n";
    if (p.type == "text/html") html += p.body + "\n";
  });
  return plain.empty() ? strip_html(html) : plain;
}

// ---- who sent it ----

bool from_mailer_daemon(const Part& top) {
  const std::string from = lower(top.headers.get("From"));
  const std::string subject = lower(top.headers.get("Subject"));
  for (std::string_view who : {"mailer-daemon", "postmaster@", "mail delivery system",
                               "mail delivery subsystem", "microsoftexchange", "mail administrator"}) {
    if (from.find(who) != std::string::npos) return true;
  }
  for (std::string_view s :
       {"undelivered mail", "mail delivery failed", "returned mail", "failure notice",
        "delivery status notification", "undeliverable", "delivery failure", "nondeliverable", "non-delivery",
        "could not be delivered", "delivery has failed", "mail system error", "delivery notification"}) {
    if (subject.find(s) != std::string::npos) return true;
  }
  return false;
}

// RFC 3834 and what auto-responders write instead; "" when none says so.
std::string auto_reply_sign(const Part& top) {
  const Fields& h = top.headers;
  if (istarts_with(trim(h.get("Auto-Submitted")), "auto-replied")) return "Auto-Submitted: auto-replied";
  if (h.has("X-Autoreply")) return "X-Autoreply: " + h.get("X-Autoreply");
  if (h.has("X-Autorespond")) return "X-Autorespond: " + h.get("X-Autorespond");
  if (icontains(h.get("Precedence"), "auto_reply")) return "Precedence: auto_reply";
  if (h.has("X-Auto-Response-Suppress") && icontains(h.get("Subject"), "automatic reply")) {
    return "Subject: " + h.get("Subject");
  }
  const std::string subject = lower(trim(h.get("Subject")));
  for (std::string_view s :
       {"out of office", "out of the office", "automatic reply", "auto-reply", "autoreply", "auto reply",
        "auto response", "auto-response", "autoresponse", "abwesenheitsnotiz", "réponse automatique",
        "respuesta automática", "risposta automatica", "on vacation", "away from the office"}) {
    if (subject.find(s) != std::string::npos) return "Subject: " + h.get("Subject");
  }
  return {};
}

// ---- RFC 3464 ----

std::vector<Failure> read_delivery_status(const Part& ds, const Limits& limits) {
  std::vector<Failure> out;
  const std::vector<Fields> groups = parse_field_groups(ds.body, limits.max_header_bytes * 4);
  // The first group is about the message (Reporting-MTA ...), when the MTA
  // wrote one: a group is a recipient's when it names one.
  for (const Fields& r : groups) {
    if (!r.has("Final-Recipient") && !r.has("Original-Recipient")) continue;
    const std::string action = lower(trim(r.get("Action")));
    if (action == "delivered" || action == "relayed" || action == "expanded") continue;
    const std::string recipient =
        typed_address(r.has("Original-Recipient") ? r.get("Original-Recipient") : r.get("Final-Recipient"));
    std::string diag(typed_text(r.get("Diagnostic-Code")));
    if (diag.empty()) diag = std::string(trim(r.get("X-Display-Name")));
    if (action == "delayed") {
      Failure f = make_failure(recipient, std::string(trim(r.get("Status"))), std::nullopt, diag);
      f.kind = jobhost_plugins::kBounceUnknown;
      f.diagnostic = one_line("delayed (a warning; delivery is still being tried): " + f.diagnostic);
      out.push_back(std::move(f));
      continue;
    }
    out.push_back(make_failure(recipient, std::string(trim(r.get("Status"))), std::nullopt, diag));
  }
  return out;
}

// ---- RFC 5965 ----

std::vector<Failure> read_feedback(const Part& top, const Part& fr, const Limits& limits) {
  const std::vector<Fields> groups = parse_field_groups(fr.body, limits.max_header_bytes * 4);
  const Fields fields = groups.empty() ? Fields() : groups[0];
  std::string recipient = typed_address(fields.get("Original-Rcpt-To"));
  if (recipient.empty()) {
    for (const Part* e : enclosed_headers(top)) {
      if (recipient.empty()) recipient = first_address(e->headers.get("To"));
    }
  }
  const std::string type = lower(trim(fields.get("Feedback-Type")));
  std::string diag = "feedback report: Feedback-Type " + (type.empty() ? std::string("(none)") : type);
  if (const std::string ua = fields.get("User-Agent"); !ua.empty()) diag += ", User-Agent " + ua;
  if (const std::string ip = fields.get("Source-IP"); !ip.empty()) diag += ", Source-IP " + ip;
  // not-spam (RFC 6650's "I did want it") is the opposite of a complaint.
  return {special(recipient,
                  type == "not-spam" ? jobhost_plugins::kBounceUnknown : jobhost_plugins::kBounceComplaint,
                  diag)};
}

// ---- plain-text bounces ----

using Lines = std::vector<std::string_view>;

bool is_separator(std::string_view line) {
  const std::string_view t = trim(line);
  return t.rfind("---", 0) == 0 || t.rfind("===", 0) == 0;
}

// Postfix's, qmail's and Yahoo's: "<addr>: reason" or "<addr>:" then the
// reason on the lines after, up to a blank line.
std::vector<Failure> read_angle_list(const Lines& lines) {
  std::vector<Failure> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.empty() || line[0] != '<') continue;
    const size_t close = line.find('>');
    if (close == std::string_view::npos) continue;
    size_t colon = line.find(':', close);
    const std::string_view between =
        trim(line.substr(close + 1, colon == std::string_view::npos ? 0 : colon - close - 1));
    if (colon == std::string_view::npos || (!between.empty() && !istarts_with(between, "(expanded from")))
      continue;
    const std::string address = first_address(line.substr(1, close - 1));
    if (address.empty()) continue;
    std::string reason(trim(line.substr(colon + 1)));
    size_t j = i + 1;
    for (; j < lines.size() && !trim(lines[j]).empty() && lines[j][0] != '<' && !is_separator(lines[j]);
         ++j) {
      reason += " ";
      reason += trim(lines[j]);
    }
    out.push_back(make_failure(address, "", std::nullopt, reason));
    i = j - 1;
  }
  return out;
}

// Exim's: "The following address(es) failed:", then per address a line
// indented by two and its reason indented by four, blocks split by blank lines.
std::vector<Failure> read_exim(const Lines& lines, size_t from, bool delayed) {
  std::vector<Failure> out;
  std::string address, reason;
  auto flush = [&] {
    if (address.empty()) return;
    if (delayed) {
      out.push_back(special(address, jobhost_plugins::kBounceUnknown,
                            "delayed (a warning; delivery is still being tried): " + reason));
    } else {
      out.push_back(make_failure(address, "", std::nullopt, reason));
    }
    address.clear();
    reason.clear();
  };
  for (size_t i = from; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (trim(line).empty()) continue;
    if (line.size() < 2 || line[0] != ' ') break;  // "------ This is a copy of the message ..."
    if (line.rfind("    ", 0) == 0 || line[0] == '\t') {
      if (!address.empty() && !istarts_with(trim(line), "(generated from")) {
        reason += " ";
        reason += trim(line);
      }
      continue;
    }
    flush();
    address = first_address(line);
    // "  user@example.com: retry timeout exceeded" (older Exim) on one line.
    if (const size_t colon = line.find(": "); colon != std::string_view::npos)
      reason = trim(line.substr(colon + 2));
  }
  flush();
  return out;
}

// Sendmail's (before it sent DSNs, and its human part still):
// "----- The following addresses had permanent fatal errors -----", then
// "<addr>" and "    (reason: 550 5.1.1 User unknown)".
std::vector<Failure> read_sendmail(const Lines& lines, size_t from, bool delayed) {
  std::vector<Failure> out;
  for (size_t i = from; i < lines.size(); ++i) {
    const std::string_view t = trim(lines[i]);
    if (t.empty() || is_separator(t)) break;
    if (istarts_with(t, "(reason:") || istarts_with(t, "(expanded from")) {
      if (!out.empty() && istarts_with(t, "(reason:")) {
        std::string_view r = t.substr(8);
        if (!r.empty() && r.back() == ')') r.remove_suffix(1);
        out.back() = delayed
                         ? special(out.back().recipient, jobhost_plugins::kBounceUnknown,
                                   "delayed (a warning; delivery is still being tried): " + std::string(r))
                         : make_failure(out.back().recipient, "", std::nullopt, r);
      }
      continue;
    }
    const std::string address = first_address(t);
    if (address.empty()) continue;
    out.push_back(delayed ? special(address, jobhost_plugins::kBounceUnknown,
                                    "delayed (a warning; delivery is still being tried)")
                          : make_failure(address, "", std::nullopt, ""));
  }
  // No "(reason: ...)": the transcript's "550 5.1.1 <addr>... User unknown".
  for (Failure& f : out) {
    if (!f.diagnostic.empty()) continue;
    for (const std::string_view line : lines) {
      const std::string_view t = trim(line);
      if (t.find(f.recipient) != std::string_view::npos && t.find("...") != std::string_view::npos &&
          jobhost_plugins::find_reply_code(t)) {
        f = make_failure(f.recipient, "", std::nullopt, t);
        break;
      }
    }
  }
  return out;
}

// Exchange 2007-2016 and Office 365 text: the recipients under a heading,
// their reasons below each, and the server's reply further down ("Remote
// Server returned '550 5.1.1 ...'", "#550 5.1.1 RESOLVER.ADR.RecipNotFound ##").
std::vector<Failure> read_exchange(const Lines& lines, size_t from) {
  std::vector<std::pair<std::string, std::string>> found;
  for (size_t i = from; i < lines.size(); ++i) {
    const std::string_view t = trim(lines[i]);
    if (t.empty()) {
      if (!found.empty() && !found.back().second.empty()) break;
      continue;
    }
    if (istarts_with(t, "diagnostic information") || istarts_with(t, "original message headers")) break;
    const std::string_view first_word = t.substr(0, t.find(' '));
    if (const std::string address = first_address(first_word); !address.empty()) {
      found.emplace_back(address, "");
      continue;
    }
    if (!found.empty())
      found.back().second += std::string(found.back().second.empty() ? "" : " ") + std::string(t);
  }
  std::string reply;  // the server's own words, when it gives them
  for (const std::string_view line : lines) {
    const std::string_view t = trim(line);
    if (const size_t at = t.find("Remote Server returned '"); at != std::string_view::npos) {
      std::string_view r = t.substr(at + 24);
      if (!r.empty() && r.back() == '\'') r.remove_suffix(1);
      reply = r;
      break;
    }
    if (t.size() > 2 && t[0] == '#' && jobhost_plugins::find_status(t)) {
      reply = t.substr(1);
      break;
    }
  }
  std::vector<Failure> out;
  for (const auto& [address, reason] : found) {
    out.push_back(make_failure(address, "", std::nullopt, reply.empty() ? reason : reply + " " + reason));
  }
  return out;
}

// "Your message to x couldn't be delivered" (Office 365), "Your message
// wasn't delivered to x because ..." (Gmail), with the reply after "The
// response from the remote server was:" or "Remote Server returned '...'".
std::vector<Failure> read_sentence(const Lines& lines, std::string& format) {
  std::string address;
  // Office 365's words, then Gmail's.
  static constexpr std::pair<std::string_view, std::string_view> kLeads[] = {
      {"your message to ", "office365"},
      {"wasn't delivered to ", "gmail"},
      {"was not delivered to ", "gmail"}};
  for (const std::string_view line : lines) {
    const std::string l = lower(line);
    for (const auto& [lead, name] : kLeads) {
      if (const size_t at = l.find(lead); at != std::string::npos) {
        address = first_address(line.substr(at + lead.size()));
        format = name;
        if (!address.empty()) break;
      }
    }
    if (!address.empty()) break;
  }
  if (address.empty()) return {};
  std::string reply;
  for (size_t i = 0; i < lines.size() && reply.empty(); ++i) {
    const std::string_view t = trim(lines[i]);
    if (const size_t at = t.find("Remote Server returned '"); at != std::string_view::npos) {
      std::string_view r = t.substr(at + 24);
      if (!r.empty() && r.back() == '\'') r.remove_suffix(1);
      reply = r;
    } else if (istarts_with(t, "the response from the remote server was:") ||
               istarts_with(t, "the response was:")) {
      for (size_t j = i + 1; j < lines.size(); ++j) {
        const std::string_view u = trim(lines[j]);
        if (u.empty()) {
          if (reply.empty()) continue;
          break;
        }
        reply += (reply.empty() ? "" : " ") + std::string(u);
      }
    }
  }
  if (reply.empty()) {  // Office 365's text names the code in its own words
    for (const std::string_view line : lines) {
      if (jobhost_plugins::find_status(line)) {
        reply = trim(line);
        break;
      }
    }
  }
  return {make_failure(address, "", std::nullopt, reply)};
}

struct TextResult {
  std::string format;
  std::vector<Failure> failures;
};

TextResult read_text_bounce(const std::string& text, bool daemon) {
  const Lines lines = split_lines(text);
  const bool delayed = icontains(text, "has not yet been delivered") ||
                       icontains(text, "delivery is delayed") ||
                       icontains(text, "transient non-fatal errors");
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string_view t = trim(lines[i]);
    if (icontains(t, "the following address(es) failed:") ||
        icontains(t, "the following addresses failed:") ||
        icontains(t, "the following address(es) have yet to be delivered")) {
      if (auto f = read_exim(lines, i + 1, delayed); !f.empty()) return {"exim", std::move(f)};
    }
    if (t.find("----- The following addresses had") != std::string_view::npos) {
      if (auto f = read_sendmail(lines, i + 1, delayed); !f.empty()) return {"sendmail", std::move(f)};
    }
    if (istarts_with(t, "delivery has failed to these recipients or groups:") ||
        istarts_with(t, "the following recipient(s) cannot be reached:") ||
        istarts_with(t, "the following recipient(s) could not be reached:")) {
      if (auto f = read_exchange(lines, i + 1); !f.empty()) return {"exchange", std::move(f)};
    }
  }
  std::string format;
  if (icontains(text, "this is the qmail-send program"))
    format = "qmail";
  else if (icontains(text, "this is the mail system at host"))
    format = "postfix";
  else if (icontains(text, "we were unable to deliver your message to the following address"))
    format = "yahoo";
  if (!format.empty() || daemon) {
    if (auto f = read_angle_list(lines); !f.empty())
      return {format.empty() ? "angle-list" : format, std::move(f)};
  }
  if (daemon) {
    if (auto f = read_sentence(lines, format); !f.empty()) return {format, std::move(f)};
  }
  return {};
}

// A report that gives a recipient no Diagnostic-Code (Exim's for an
// unrouteable address says only "Status: 5.0.0") takes the reason its own
// human-readable part gives that recipient.
void add_reasons_from_text(std::vector<Failure>& failures, const std::string& text) {
  if (std::none_of(failures.begin(), failures.end(), [](const Failure& f) { return f.diagnostic.empty(); }))
    return;
  const TextResult told = read_text_bounce(text, true);
  for (Failure& f : failures) {
    if (!f.diagnostic.empty() || f.kind != jobhost_plugins::kBounceSoft) continue;
    for (const Failure& t : told.failures) {
      if (t.recipient == f.recipient && !t.diagnostic.empty()) {
        f = make_failure(f.recipient, f.status, f.reply_code, t.diagnostic);
        break;
      }
    }
  }
}

// ---- Amazon SES notifications ----

// nlohmann::json parses recursively: refuse deep nesting before it does.
bool nesting_below(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

std::string json_string(const nlohmann::json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

Report read_ses(std::string_view raw) {
  const auto fail = [] {
    return Malformed(
        "JSON, but not an Amazon SES bounce or complaint notification (notificationType or eventType)");
  };
  if (!nesting_below(raw, 64)) throw Malformed("JSON nested deeper than 64 levels");
  if (raw.size() > 0 && trim(raw).front() == '[') throw fail();
  nlohmann::json n = nlohmann::json::parse(raw, nullptr, false);
  if (n.is_discarded() || !n.is_object()) throw fail();
  if (json_string(n, "Type") == "Notification") {  // an SNS envelope: the notification is its Message
    const std::string inner = json_string(n, "Message");
    if (!nesting_below(inner, 64)) throw Malformed("JSON nested deeper than 64 levels");
    n = nlohmann::json::parse(inner, nullptr, false);
    if (n.is_discarded() || !n.is_object()) throw fail();
  }
  std::string type = json_string(n, "notificationType");
  if (type.empty()) type = json_string(n, "eventType");
  if (type.empty()) throw fail();
  Report report;
  report.format = "ses";
  const nlohmann::json mail = n.value("mail", nlohmann::json::object());
  if (mail.is_object()) {
    report.message_id = find_jobhost_message_id(mail.value("commonHeaders", nlohmann::json::object()).dump());
    if (report.message_id.empty() && mail.contains("headers"))
      report.message_id = find_jobhost_message_id(mail["headers"].dump());
    report.job_id = find_verp_job_id(json_string(mail, "source"));
    if (!report.job_id.empty()) report.matched_by = "verp";
  }
  if (type == "Bounce") {
    const nlohmann::json b = n.value("bounce", nlohmann::json::object());
    const std::string bounce_type = json_string(b, "bounceType"), sub = json_string(b, "bounceSubType");
    for (const auto& r : b.value("bouncedRecipients", nlohmann::json::array())) {
      Failure f = make_failure(typed_address(json_string(r, "emailAddress")), json_string(r, "status"),
                               std::nullopt, typed_text(json_string(r, "diagnosticCode")));
      if (f.status.empty() && !f.reply_code) {
        // SES's own verdict when the receiver said nothing it quotes.
        if (bounce_type == "Transient")
          f.kind = jobhost_plugins::kBounceSoft;
        else if (bounce_type == "Permanent" &&
                 (sub == "NoEmail" || sub == "Suppressed" || sub == "OnAccountSuppressionList"))
          f.kind = jobhost_plugins::kBounceHard;
        if (f.diagnostic.empty()) f.diagnostic = "SES bounceType " + bounce_type + "/" + sub;
      }
      report.failures.push_back(std::move(f));
    }
  } else if (type == "Complaint") {
    const nlohmann::json c = n.value("complaint", nlohmann::json::object());
    const std::string feedback = json_string(c, "complaintFeedbackType");
    for (const auto& r : c.value("complainedRecipients", nlohmann::json::array())) {
      report.failures.push_back(
          special(typed_address(json_string(r, "emailAddress")), jobhost_plugins::kBounceComplaint,
                  "SES complaint" + (feedback.empty() ? std::string() : ": " + feedback)));
    }
  }
  if (report.failures.empty()) {
    report.failures.push_back(
        special("", jobhost_plugins::kBounceUnknown,
                "an Amazon SES " + type + " notification: no bounced or complained recipient"));
  }
  return report;
}

// ---- matching to our message ----

void match(const Part& top, const std::string& text, Report& report) {
  const std::vector<const Part*> originals = enclosed_headers(top);
  if (report.job_id.empty()) {
    for (const char* name : {"To", "Delivered-To", "X-Original-To", "Envelope-To", "Return-Path"}) {
      for (const Field& f : top.headers.all()) {
        if (report.job_id.empty() && lower(f.name) == lower(name)) report.job_id = find_verp_job_id(f.value);
      }
    }
    for (const Part* o : originals) {
      if (report.job_id.empty()) report.job_id = find_verp_job_id(o->headers.get("Return-Path"));
    }
    if (!report.job_id.empty()) report.matched_by = "verp";
  }
  if (report.message_id.empty()) {
    for (const Part* o : originals) {
      if (report.message_id.empty())
        report.message_id = find_jobhost_message_id(o->headers.get("Message-ID"));
    }
    for (const char* name : {"In-Reply-To", "References", "X-Original-Message-ID"}) {
      if (report.message_id.empty()) report.message_id = find_jobhost_message_id(top.headers.get(name));
    }
    // A bounce that quotes the original as text (Exim, qmail) or names it in
    // its report fields.
    walk(top, [&](const Part& p) {
      if (report.message_id.empty() && p.children.empty())
        report.message_id = find_jobhost_message_id(p.body);
    });
    if (report.message_id.empty()) report.message_id = find_jobhost_message_id(text);
  }
  if (report.job_id.empty()) {  // the body's copy of the original's Return-Path
    walk(top, [&](const Part& p) {
      if (report.job_id.empty() && p.children.empty()) report.job_id = find_verp_job_id(p.body);
    });
    if (!report.job_id.empty()) report.matched_by = "verp";
  }
  if (report.job_id.empty() && !report.message_id.empty()) {
    report.job_id = report.message_id.substr(1, 36);
    report.matched_by = "message-id";
  }
}

}  // namespace

std::string find_jobhost_message_id(std::string_view text) {
  static constexpr std::string_view kTail = "@jobhost>";
  for (size_t at = text.find(kTail); at != std::string_view::npos; at = text.find(kTail, at + 1)) {
    if (at >= 37 && text[at - 37] == '<' && is_uuid_at(text, at - 36)) {
      return lower(text.substr(at - 37, 37 + kTail.size()));
    }
  }
  return {};
}

std::string find_verp_job_id(std::string_view text) {
  static constexpr std::string_view kLead = "bounce+";
  for (size_t at = text.find(kLead); at != std::string_view::npos; at = text.find(kLead, at + 1)) {
    const size_t id = at + kLead.size();
    if (is_uuid_at(text, id) && id + 36 < text.size() && text[id + 36] == '@' &&
        (at == 0 || !is_address_char(text[at - 1]))) {
      return lower(text.substr(id, 36));
    }
  }
  return {};
}

Report parse_bounce(std::string_view raw, const Limits& limits) {
  if (const std::string_view t = trim(raw.substr(0, 64));
      !t.empty() && (t.front() == '{' || t.front() == '[')) {
    Report report = read_ses(raw);
    if (report.job_id.empty() && !report.message_id.empty()) {
      report.job_id = report.message_id.substr(1, 36);
      report.matched_by = "message-id";
    }
    return report;
  }
  const Part top = parse_message(raw, limits);
  const std::string text = human_text(top);
  Report report;
  if (const Part* fr = find_type(top, {"message/feedback-report"})) {
    report.format = "arf";
    report.failures = read_feedback(top, *fr, limits);
  } else if (const Part* ds = find_type(top, {"message/delivery-status", "message/global-delivery-status"})) {
    report.format = "rfc3464";
    report.failures = read_delivery_status(*ds, limits);
    add_reasons_from_text(report.failures, text);
  }
  const bool daemon = from_mailer_daemon(top);
  if (report.failures.empty() && !daemon) {
    if (const std::string sign = auto_reply_sign(top); !sign.empty()) {
      report.format = "auto_reply";
      report.failures = {special(first_address(top.headers.get("From")), jobhost_plugins::kBounceAutoReply,
                                 "auto-reply (" + sign + ")")};
    }
  }
  if (report.failures.empty()) {
    TextResult t = read_text_bounce(text, daemon);
    report.format = t.format;
    report.failures = std::move(t.failures);
  }
  if (report.failures.empty() && daemon) {
    // A notice from a mailer daemon in no format we know: its first line with
    // a status or reply code is the best evidence there is.
    for (const std::string_view line : split_lines(text)) {
      if (jobhost_plugins::find_status(line) || jobhost_plugins::find_reply_code(trim(line))) {
        report.format = "generic";
        report.failures = {make_failure("", "", std::nullopt, line)};
        break;
      }
    }
    if (report.failures.empty()) {
      report.format = "unknown";
      report.failures = {special("", jobhost_plugins::kBounceUnknown,
                                 "a delivery failure notice (subject \"" +
                                     top.headers.get("Subject").substr(0, 200) +
                                     "\") in no format this parser knows, with no status code in its text")};
    }
  }
  if (report.failures.empty()) {
    report.format = "unknown";
    report.failures = {
        special("", jobhost_plugins::kBounceUnknown,
                "not a delivery status notification, feedback report, auto-reply or known bounce "
                "format (Content-Type " +
                    top.type + ", subject \"" + top.headers.get("Subject").substr(0, 200) + "\")")};
  }
  match(top, text, report);
  return report;
}

}  // namespace bounce
