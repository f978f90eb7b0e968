// email_send: the job type "email.send". Renders a tenant's template for one
// recipient, signs it with DKIM when the From domain has a key, and hands it
// to the first SMTP relay that takes it, over a pooled, pipelined session.
//
// Payload: {"recipient", "template_id", "variables", "tenant_id", "campaign_id"?}.
// Settings: database_url, db_pool_size (4), providers: [{name, url, username?,
// password?, timeout_ms?, max_sessions?, max_messages_per_session?,
// max_idle_ms?, pipelining?, ca_file?}] tried in order (primary, then
// fallbacks), circuit_breaker: {failures: 5, open_ms: 30000}, helo (the EHLO
// name), limiters: {relay: "relay:", domain: "domain:", deferral_hold_ms:
// 60000}; any other key, at any level, is refused naming it.
//
// Flow control (DESIGN §9): before a message is claimed the handler takes
// the limiter "<domain prefix><recipient's domain>", and before each relay
// "<relay prefix><provider name>" (the config's limiters: section says what
// each allows; a name no entry governs is free unless held back). A full
// limiter is not a failure: that relay is skipped, and when no relay took
// the message the job is throttled (Result::throttled), back when the limiter
// has room, without using an attempt. A relay's "try later" (421, 450, 451,
// 452) holds that relay back for deferral_hold_ms on every host: for the
// recipient's domain alone when it answered RCPT TO
// ("relay:NAME/domain:DOMAIN"), else for all mail; the next relay is tried,
// and a message no relay took because of it is throttled too, never failed.
//
// What a relay's answer means:
//  - MAIL, RCPT or DATA refused (4xx/5xx), unreachable, or timed out before
//    the end of the message was written: that relay did not take it; count a
//    failure against its circuit breaker and try the next relay.
//  - RCPT refused with 5xx: the relay is fine, the address is not. The job
//    fails for good (another relay would refuse it too, or bounce it later).
//  - the end of the message answered with 4xx/5xx: refused, next relay.
//  - the whole message written and then no answer (timeout, connection lost):
//    the relay may have queued it. Never sent elsewhere; see below.
// A 421/450/451/452 ("try later") goes through on_relay_deferral() first.
//
// Never twice per job id: app.email_messages has one row per job, claimed as
// 'sending' (committed) before any relay is contacted. An attempt that knows
// no relay took the message sets it to 'failed', and a later attempt may send.
// 'sent' or 'suppressed' make a later attempt a no-op. A row still 'sending'
// means an attempt died while a relay may have accepted the message: it is not
// sent again; the job fails naming the Message-ID to look up in the relays'
// logs (to resend anyway, set that row's status to 'failed' and replay the job).
// Every message carries Message-ID <job-id@jobhost>, so a relay that
// deduplicates by Message-ID drops a copy even when an operator resends.
// A kept session that turns out closed before answering anything is retried
// once on a new session of the same relay: nothing of the message was handed
// over. A session that failed in any other way is closed, never reused.
//
// Database round trips per message, when nothing is retried: the claim
// (MessageClaims: the row, the template's and the DKIM key's versions, the
// campaign, the suppression list) and the outcome (OutcomeWriter), each one
// statement for all the workers that arrive together (GroupCommit), so less
// than one each per message under load. A template or key that changed
// costs one more read; a later attempt of a job takes the old path (a
// transaction of three to six statements).
#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/bounce_kind.hpp>
#include <jobhost_plugins/email_address.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>
#include <jobhost_plugins/unsubscribe_token.hpp>

#include "dkim.hpp"
#include "dkim_canon.hpp"
#include "message_claim.hpp"
#include "outcome_writer.hpp"
#include "render.hpp"
#include "smtp_pool.hpp"
#include "versioned_cache.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using nlohmann::json;
using smtp_client::Outcome;
using Clock = std::chrono::steady_clock;

constexpr const char* kLoadTemplate =
    "SELECT from_email, subject, html_body, text_body, updated_at::text FROM app.email_templates "
    "WHERE tenant_id = $1 AND id = $2";
constexpr const char* kLoadDomain =
    "SELECT dkim_selector, coalesce(dkim_private_key, ''), dkim_algorithm, updated_at::text FROM app.sending_domains "
    "WHERE tenant_id = $1 AND domain = $2";

// A later attempt (the row exists): learn what the earlier one did, as before.
constexpr const char* kPrior =
    "SELECT id, status, attempt, coalesce(provider, '') FROM app.email_messages "
    "WHERE tenant_id = $1 AND job_id = $2::uuid FOR UPDATE";
constexpr const char* kReclaim =
    "UPDATE app.email_messages SET status = 'sending', attempt = $3, subject = $4, provider = NULL, error = NULL "
    "WHERE tenant_id = $1 AND id = $2";
constexpr const char* kSuppression = "SELECT reason FROM app.suppressions WHERE tenant_id = $1 AND email = $2";
constexpr const char* kDomainVersion =
    "SELECT updated_at::text FROM app.sending_domains WHERE tenant_id = $1 AND domain = $2";
constexpr const char* kSetStatus =
    "UPDATE app.email_messages SET status = $3, provider = nullif($4, ''), error = nullif($5, ''), "
    "sent_at = CASE WHEN $3 = 'sent' THEN now() END WHERE tenant_id = $1 AND id = $2";
constexpr const char* kEvent =
    "INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb)";

// ---- settings -------------------------------------------------------------

struct Provider {
  std::string name, url;
  long timeout_ms = 30000;
  std::unique_ptr<smtp_client::SessionPool> sessions;
  // Circuit breaker, under EmailSend::mu_: consecutive failures, and while
  // open (failures >= threshold) the time before which it is skipped.
  int failures = 0;
  Clock::time_point open_until{};
};

const jobhost_plugins::SettingsReader::Keys kKeys = {"database_url", "db_pool_size", "providers",
                                                     "circuit_breaker", "helo", "limiters",
                                                     "unsubscribe", "verp_domain"};
const jobhost_plugins::SettingsReader::Keys kProviderKeys = {
    "name", "url", "username", "password", "timeout_ms", "max_sessions", "max_messages_per_session", "max_idle_ms",
    "pipelining", "ca_file"};

struct Template {
  std::string from, subject, html, text;
};

// A domain's signer, or why it cannot sign (a bad key is cached too, so it
// is not parsed again for every message until the row changes).
struct DomainKey {
  std::shared_ptr<const dkim::Signer> signer;
  std::string problem;
};

std::string domain_of(const std::string& address) {
  const auto at = address.rfind('@');
  return at == std::string::npos ? "" : dkim::lower(address.substr(at + 1));
}

// ---- the plugin ------------------------------------------------------------

class EmailSend : public jobhost::sdk::Plugin {
 public:
  explicit EmailSend(const Settings& settings)
      : EmailSend(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit EmailSend(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 4) {
    if (!s.has("providers") || !s.json()["providers"].is_array() || s.json()["providers"].empty()) {
      s.fail("providers",
             "must be a non-empty list of relays [{name, url, username?, password?, timeout_ms?, ...}]");
    }
    helo_ = s.string("helo", "");
    if (helo_.find_first_of("/?# \t\r\n") != std::string::npos) s.fail("helo", "must be a host name");
    std::set<std::string> names;
    for (const auto& p : s.mappings("providers", kProviderKeys)) {
      auto prov = std::make_unique<Provider>();
      prov->name = p.required_string("name");
      prov->url = p.required_string("url");
      prov->timeout_ms = static_cast<long>(p.integer("timeout_ms", 30000, 1, 86400000));
      if (prov->name.empty()) p.fail("name", "must not be empty");
      if (!names.insert(prov->name).second) p.fail("name", "'" + prov->name + "' names two providers");
      smtp_client::Endpoint ep;
      if (const std::string why = parse_url(prov->url, ep); !why.empty()) p.fail("url", why);
      ep.username = p.string("username", "");
      ep.password = p.string("password", "");
      if (ep.password.size() && ep.username.empty()) p.fail("password", "is set without a username");
      ep.require_tls = !ep.username.empty() && !ep.implicit_tls;  // credentials go over TLS or not at all
      ep.timeout_ms = prov->timeout_ms;
      ep.use_pipelining = p.boolean("pipelining", true);
      ep.ca_file = p.string("ca_file", "");
      if (ep.helo.empty()) ep.helo = helo_.empty() ? "localhost" : helo_;
      smtp_client::PoolLimits limits;
      limits.max_sessions = static_cast<int>(p.integer("max_sessions", 32, 1, 10000));
      limits.max_messages = static_cast<int>(p.integer("max_messages_per_session", 1000, 1, 10000000));
      limits.max_idle_ms = static_cast<long>(p.integer("max_idle_ms", 30000, 1, 86400000));
      prov->sessions = std::make_unique<smtp_client::SessionPool>(ep, limits);
      providers_.push_back(std::move(prov));
    }
    const jobhost_plugins::SettingsReader breaker = s.mapping("circuit_breaker", {"failures", "open_ms"});
    breaker_failures_ = static_cast<int>(breaker.integer("failures", 5, 1, 86400000));
    breaker_open_ms_ = static_cast<long>(breaker.integer("open_ms", 30000, 1, 86400000));
    const jobhost_plugins::SettingsReader lim = s.mapping("limiters", {"relay", "domain", "deferral_hold_ms"});
    relay_limiter_ = lim.string("relay", "relay:");
    domain_limiter_ = lim.string("domain", "domain:");
    deferral_hold_ = std::chrono::milliseconds(lim.integer("deferral_hold_ms", 60000, 1, 86400000));
    verp_domain_ = s.string("verp_domain", "");
    if (!verp_domain_.empty() && jobhost_plugins::email_problem("bounce@" + verp_domain_)) {
      s.fail("verp_domain", "must be a mail domain (the envelope sender becomes bounce+<job id>@<verp_domain>)");
    }
    if (s.has("unsubscribe")) {
      const jobhost_plugins::SettingsReader u = s.mapping("unsubscribe", {"url", "mailto", "secret", "ttl_days"});
      unsubscribe_.url = u.required_string("url");
      if (unsubscribe_.url.rfind("https://", 0) != 0 && unsubscribe_.url.rfind("http://", 0) != 0) {
        u.fail("url", "must be the http(s) URL of the admin API's one-click endpoint, e.g. "
                      "https://mail.example.com/api/v1/unsubscribe");
      }
      while (!unsubscribe_.url.empty() && unsubscribe_.url.back() == '/') unsubscribe_.url.pop_back();
      unsubscribe_.mailto = u.string("mailto", "");
      if (!unsubscribe_.mailto.empty() && jobhost_plugins::email_problem(unsubscribe_.mailto)) {
        u.fail("mailto", "must be an email address");
      }
      unsubscribe_.secret = u.required_string("secret");
      if (unsubscribe_.secret.size() < 16) u.fail("secret", "must be at least 16 characters (it signs the links)");
      unsubscribe_.ttl = std::chrono::hours(24) * u.integer("ttl_days", 60, 1, 3650);
    }
    outcomes_ = std::make_unique<email_send::OutcomeWriter>(pool_);
    // Idle sessions past max_idle_ms are closed even when no message comes.
    janitor_ = std::jthread([this](std::stop_token st) {
      std::mutex m;
      std::condition_variable_any cv;
      std::unique_lock lock(m);
      while (!st.stop_requested()) {
        cv.wait_for(lock, st, std::chrono::seconds(1), [] { return false; });
        if (st.stop_requested()) break;
        for (auto& p : providers_) p->sessions->sweep();
      }
    });
  }

  ~EmailSend() override { janitor_ = {}; }

  std::string validate(std::string_view, const json& p) override {
    using namespace jobhost_plugins;
    if (!p.is_object()) return "payload: must be an object";
    if (auto e = first_error(need_string(p, "recipient", 254), need_string(p, "template_id", 200),
                             need_string(p, "tenant_id", 200), need_object(p, "variables"),
                             opt_string(p, "campaign_id", 200));
        !e.empty()) {
      return e;
    }
    const std::string& recipient = p["recipient"].get_ref<const std::string&>();
    if (const auto why = email_problem(normalize_email(recipient))) {
      return "payload.recipient: '" + recipient + "' " + *why;
    }
    for (const auto& [key, value] : p["variables"].items()) {
      if (value.is_object() || value.is_array()) {
        return "payload.variables." + key + ": must be a string, number, boolean or null, not " + value.type_name();
      }
    }
    return {};
  }

  Result handle(Job& job) override {
    const json& p = job.payload();
    const std::string tenant = p["tenant_id"], template_id = p["template_id"];
    const std::string recipient = jobhost_plugins::normalize_email(p["recipient"].get<std::string>());
    const std::optional<std::string> campaign =
        p.contains("campaign_id") ? std::optional<std::string>(p["campaign_id"].get<std::string>()) : std::nullopt;
    const std::string job_id(job.id());
    const std::string message_id = "<" + job_id + "@jobhost>";
    const std::string domain_name = domain_limiter_ + domain_of(recipient);
    // Before anything is claimed: a full domain costs no write at all.
    if (const auto taken = job.acquire(domain_name); !taken) {
      return Result::throttled(taken.wait, "limiter " + domain_name + " is full");
    }

    // Render with the cached template, claim on condition that it is still
    // current; a changed template is read again and the claim retried.
    // No database connection is held while a relay is contacted.
    auto [tpl, version] = templates_.any(tenant, template_id);
    mail::Rendered r;
    long long row = 0;
    std::optional<std::string> domain_version;
    for (int round = 0;; ++round) {
      if (!tpl) {
        auto conn = pool_.acquire();
        pqxx::nontransaction tx(*conn);
        const pqxx::result t = tx.exec_params(kLoadTemplate, tenant, template_id);
        if (t.empty()) return no_template(template_id, tenant);
        auto loaded = std::make_shared<Template>(
            Template{t[0][0].c_str(), t[0][1].c_str(), t[0][2].c_str(), t[0][3].c_str()});
        version = t[0][4].c_str();
        templates_.put(tenant, template_id, version, loaded);
        tpl = loaded;
      }
      if (const auto why = jobhost_plugins::email_problem(tpl->from)) {
        return Result::permanent("template '" + template_id + "': from_email '" + tpl->from + "' " + *why);
      }
      try {
        r.subject = mail::render(tpl->subject, p["variables"], false);
        r.html = mail::render(tpl->html, p["variables"], true);
        r.text = mail::render(tpl->text, p["variables"], false);
      } catch (const mail::MissingVariable& e) {
        return Result::permanent(e.what());
      }
      const email_send::ClaimResult c =
          claims_.claim({tenant, job_id, campaign, template_id, recipient, r.subject, message_id,
                         static_cast<int>(job.attempt()), version, domain_of(tpl->from)});
      if (!c.template_version) return no_template(template_id, tenant);
      if (!c.campaign_ok) {
        return Result::permanent("payload.campaign_id: no campaign '" + *campaign + "' for tenant '" + tenant + "'");
      }
      if (*c.template_version != version) {
        if (round == 3) throw std::runtime_error("template '" + template_id + "' keeps changing; try again");
        templates_.erase(tenant, template_id);
        tpl = nullptr;
        continue;
      }
      domain_version = c.domain_version;
      if (!c.row) {
        // Not claimed: the row exists, an earlier attempt made it.
        if (auto done = earlier_attempt(job, tenant, job_id, message_id, recipient, campaign, r.subject, tpl->from,
                                        row, domain_version)) {
          return *done;
        }
      } else if (c.status == "suppressed") {
        job.log_info("recipient " + recipient + " is suppressed (" + c.suppression + "); " + message_id + " not sent");
        return Result::ok();
      } else {
        row = *c.row;
      }
      break;
    }

    std::string message =
        mail::mime(tpl->from, recipient, message_id, r, std::time(nullptr), list_unsubscribe(tenant, recipient, row, campaign));
    if (domain_version) {
      const std::string domain = domain_of(tpl->from);
      const std::shared_ptr<const DomainKey> key = domain_key(tenant, domain, *domain_version);
      std::string problem = key->problem;
      if (problem.empty()) {
        try {
          message = key->signer->signature(message, std::time(nullptr)) + message;
        } catch (const dkim::KeyError& e) {
          problem = e.what();
        }
      }
      if (!problem.empty()) {
        const std::string why = "cannot DKIM-sign mail from " + domain + " (app.sending_domains, tenant '" + tenant +
                                "', domain '" + domain + "'): " + problem + "; fix or delete that row and replay the job";
        outcomes_->write({tenant, row, "failed", "", why, "failed", campaign, recipient, json{{"reason", why}}.dump()});
        return Result::permanent(why);
      }
    }

    // VERP: a bounce comes back to an address that names the job (bounce.process matches it).
    const std::string envelope_from = verp_domain_.empty() ? tpl->from : "bounce+" + job_id + "@" + verp_domain_;
    std::vector<std::string> errors;
    const auto abort = [&job] { return job.cancelled(); };
    // Set when a limit, not a fault, kept the message back: the job is then
    // throttled after this long instead of retried.
    std::optional<std::chrono::milliseconds> held_back;
    const auto hold = [&](std::chrono::milliseconds wait) { held_back = std::max(held_back.value_or(wait), wait); };
    for (auto& prov_ptr : providers_) {
      Provider& prov = *prov_ptr;
      if (job.cancelled()) {
        errors.push_back("cancelled before trying " + prov.name);
        break;
      }
      if (!admit(prov)) {
        errors.push_back(prov.name + ": circuit open");
        continue;
      }
      // The relay's own limiter, then whether it deferred this domain lately.
      const std::string relay_name = relay_limiter_ + prov.name, relay_domain = relay_name + "/" + domain_name;
      std::optional<std::string> full;
      for (const std::string* name : {&relay_name, &relay_domain}) {
        if (const auto taken = job.acquire(*name); !taken) {
          full = *name;
          hold(taken.wait);
          break;
        }
      }
      if (full) {
        errors.push_back(prov.name + ": limiter " + *full + " is full or held back");
        continue;
      }
      const smtp_client::Delivery d = deliver(prov, envelope_from, recipient, message, abort);
      settle_breaker(prov, d.outcome == Outcome::kSent || d.outcome == Outcome::kRecipientRejected);
      if (d.refusal.code == 421 || d.refusal.code == 450 || d.refusal.code == 451 || d.refusal.code == 452) {
        on_relay_deferral(job, prov, d, relay_domain);
        hold(deferral_hold_);
      }
      switch (d.outcome) {
        case Outcome::kSent:
          outcomes_->write({tenant, row, "sent", prov.name, "", "sent", campaign, recipient,
                            json{{"provider", prov.name}, {"message_id", message_id}}.dump()});
          job.log_info("sent " + message_id + " to " + recipient + " via " + prov.name);
          return Result::ok();
        case Outcome::kRecipientRejected: {
          const std::string why = prov.name + " refused the recipient: " + d.error;
          email_send::OutcomeRow out{tenant, row, "failed", prov.name, why, "failed", campaign, recipient,
                         json{{"provider", prov.name}, {"reason", why}}.dump()};
          // Recorded as a bounce; a bad address (not a policy refusal) is a
          // hard one: suppressed for the tenant.
          const auto status = jobhost_plugins::find_status(d.refusal.line);
          const std::string kind = jobhost_plugins::bounce_kind(
              status ? jobhost_plugins::to_string(*status) : "", d.refusal.code, d.refusal.line);
          const bool hard = kind == jobhost_plugins::kBounceHard;
          out.bounce = json{{"kind", kind}, {"status", status ? jobhost_plugins::to_string(*status) : ""},
                            {"reply_code", d.refusal.code}, {"diagnostic", d.refusal.line},
                            {"provider", prov.name}, {"at", "rcpt"}}
                           .dump();
          outcomes_->write(std::move(out));
          if (hard) {
            job.log_info("hard bounce at RCPT for " + recipient + ": suppressed for tenant " + tenant);
          }
          return Result::permanent("payload.recipient: '" + recipient + "' " + why);
        }
        case Outcome::kUnknown: {
          // The relay may have the message: no other relay may get it too.
          const std::string why = prov.name + ": " + d.error + " after the whole message was handed over";
          outcomes_->write({tenant, row, "sending", prov.name, why, "", campaign, recipient, "{}"});
          return Result::permanent("delivery state unknown: " + why + "; not sending " + message_id +
                                   " twice (look it up in " + prov.name + "'s log)");
        }
        case Outcome::kNotTaken:
          errors.push_back(prov.name + ": " + d.error);
          job.log_warn("relay " + prov.name + " did not take " + message_id + ": " + d.error);
          break;
      }
    }

    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "; ") + e;
    outcomes_->write({tenant, row, "failed", "", all, "", campaign, recipient, "{}"});
    if (const auto reopen = all_open_until()) {
      const auto wait = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(*reopen - Clock::now()),
                                 std::chrono::milliseconds(1));
      if (held_back) return Result::throttled(std::min(wait, *held_back), "every relay's circuit is open: " + all);
      return Result::retry_after(wait, "every relay's circuit is open: " + all);
    }
    if (held_back && !job.cancelled()) {
      return Result::throttled(*held_back, "held back, not sent: " + all);
    }
    return Result::retry("no relay took " + message_id + ": " + all);
  }

 private:
  static Result no_template(const std::string& template_id, const std::string& tenant) {
    return Result::permanent("payload.template_id: no template '" + template_id + "' for tenant '" + tenant + "'");
  }

  // smtp://HOST[:PORT][/EHLO-NAME] or smtps://...; '' when fine, else why not.
  static std::string parse_url(const std::string& url, smtp_client::Endpoint& ep) {
    const std::string bad = "must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got '" + url + "'";
    size_t at = 0;
    if (url.rfind("smtp://", 0) == 0) {
      at = 7;
      ep.port = 25;
    } else if (url.rfind("smtps://", 0) == 0) {
      at = 8;
      ep.port = 465;
      ep.implicit_tls = true;
    } else {
      return bad;
    }
    const size_t slash = url.find('/', at);
    std::string hostport = url.substr(at, slash == std::string::npos ? std::string::npos : slash - at);
    if (slash != std::string::npos) ep.helo = url.substr(slash + 1);  // the URL's path is the EHLO name, as with libcurl
    if (hostport.empty()) return bad;
    size_t colon = std::string::npos;
    if (hostport[0] == '[') {
      const size_t close = hostport.find(']');
      if (close == std::string::npos) return bad;
      ep.host = hostport.substr(1, close - 1);
      if (close + 1 < hostport.size()) {
        if (hostport[close + 1] != ':') return bad;
        colon = close + 1;
      }
    } else {
      colon = hostport.rfind(':');
      ep.host = hostport.substr(0, colon);
    }
    if (colon != std::string::npos) {
      const std::string port = hostport.substr(colon + 1);
      if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
          std::stoi(port) < 1 || std::stoi(port) > 65535) {
        return bad;
      }
      ep.port = static_cast<uint16_t>(std::stoi(port));
    }
    if (ep.host.empty() || ep.helo.find_first_of("/?# \t\r\n") != std::string::npos) return bad;
    return {};
  }

  // One message through one relay's pool. A kept session found closed
  // before it answered anything gets one retry on a new session.
  // The List-Unsubscribe header fields of a campaign's message (RFC 2369, and
  // RFC 8058's one-click POST), "" for other mail or without unsubscribe: settings.
  std::string list_unsubscribe(const std::string& tenant, const std::string& recipient, long long row,
                               const std::optional<std::string>& campaign) const {
    if (!campaign || unsubscribe_.url.empty() || row == 0) return "";
    const auto expires = std::chrono::duration_cast<std::chrono::seconds>(
        (std::chrono::system_clock::now() + unsubscribe_.ttl).time_since_epoch());
    const std::string token = jobhost_plugins::unsubscribe::make(
        {tenant, jobhost_plugins::normalize_email(recipient), row, expires.count()}, unsubscribe_.secret);
    std::string value = "<" + unsubscribe_.url + "/" + token + ">";
    if (!unsubscribe_.mailto.empty()) value += ",\r\n <mailto:" + unsubscribe_.mailto + "?subject=unsubscribe%20" + token + ">";
    return "List-Unsubscribe: " + value + "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
  }

  smtp_client::Delivery deliver(Provider& prov, const std::string& from, const std::string& to,
                                const std::string& message, const std::function<bool()>& abort) {
    smtp_client::Delivery d;
    for (int tries = 0; tries < 2; ++tries) {
      smtp_client::SessionPool::Lease lease;
      try {
        lease = prov.sessions->checkout(tries > 0);
      } catch (const smtp_client::OpenError& e) {
        d = smtp_client::Delivery{};
        d.error = e.what();
        d.refusal = e.reply;
        return d;
      } catch (const std::exception& e) {
        d = smtp_client::Delivery{};
        d.error = e.what();
        return d;
      }
      d = lease->send(from, to, message, abort);
      lease.reusable(d.reusable);
      if (!d.stale) break;
    }
    return d;
  }

  // The one place a relay's "try later" (421, 450, 451, 452) lands. At RCPT
  // TO the relay defers this recipient's domain: that relay is held back for
  // the domain ("relay:NAME/domain:DOMAIN"), on every host. Otherwise the
  // relay itself is held back. Either way the message fails over to the next
  // relay as any refusal does, and is throttled when none took it.
  void on_relay_deferral(const Job& job, const Provider& prov, const smtp_client::Delivery& d,
                         const std::string& relay_domain) {
    const std::string held = d.at_recipient ? relay_domain : relay_limiter_ + prov.name;
    job.log_warn("relay " + prov.name + " deferred: \"" + d.refusal.line + "\"; holding " + held + " back for " +
                 std::to_string(deferral_hold_.count()) + " ms");
    job.hold_off(held, deferral_hold_);
  }

  // A later attempt of a job whose row exists. Returns the job's result when
  // that attempt is settled (already sent or suppressed, unknown, another
  // tenant's), or nullopt with `row` reclaimed as 'sending' for this attempt.
  std::optional<Result> earlier_attempt(Job& job, const std::string& tenant, const std::string& job_id,
                                        const std::string& message_id, const std::string& recipient,
                                        const std::optional<std::string>& campaign, const std::string& subject,
                                        const std::string& from, long long& row,
                                        std::optional<std::string>& domain_version) {
    auto conn = pool_.acquire();
    pqxx::work tx(*conn);
    const pqxx::result prior = tx.exec_params(kPrior, tenant, job_id);
    if (prior.empty()) {
      // Only another tenant's payload reusing this job id could get here.
      return Result::permanent("payload.tenant_id: job " + job_id + " already has a message of another tenant");
    }
    const std::string status = prior[0][1].c_str();
    const std::string attempt = prior[0][2].c_str();
    if (status == "sent" || status == "suppressed") {
      tx.commit();
      job.log_info("message " + message_id + " was already " + status + " by attempt " + attempt +
                   "; not sending again");
      return Result::ok();
    }
    if (status == "sending") {
      const std::string relay = prior[0][3].size() ? prior[0][3].c_str() : provider_names();
      return Result::permanent("delivery state unknown: attempt " + attempt + " stopped while handing Message-ID " +
                               message_id + " to " + relay +
                               "; not sending it twice (look the Message-ID up in the relay's log; to resend, "
                               "set the app.email_messages row of this job to 'failed' and replay the job)");
    }
    row = prior[0][0].as<long long>();
    tx.exec_params(kReclaim, tenant, row, job.attempt(), subject);
    const pqxx::result sup = tx.exec_params(kSuppression, tenant, recipient);
    if (!sup.empty()) {
      const std::string reason = sup[0][0].c_str();
      tx.exec_params(kSetStatus, tenant, row, "suppressed", "", "suppressed: " + reason);
      tx.exec_params(kEvent, tenant, row, campaign, recipient, "suppressed", json{{"reason", reason}}.dump());
      tx.commit();
      job.log_info("recipient " + recipient + " is suppressed (" + reason + "); " + message_id + " not sent");
      return Result::ok();
    }
    const pqxx::result dom = tx.exec_params(kDomainVersion, tenant, domain_of(from));
    domain_version = dom.empty() ? std::nullopt : std::optional<std::string>(dom[0][0].c_str());
    tx.commit();
    return std::nullopt;
  }

  // The signer of a tenant's domain at this version, read and parsed on a miss.
  std::shared_ptr<const DomainKey> domain_key(const std::string& tenant, const std::string& domain,
                                              const std::string& version) {
    if (auto hit = keys_.at(tenant, domain, version)) return hit;
    auto key = std::make_shared<DomainKey>();
    std::string read_version = version;
    {
      auto conn = pool_.acquire();
      pqxx::nontransaction tx(*conn);
      const pqxx::result d = tx.exec_params(kLoadDomain, tenant, domain);
      if (d.empty()) {
        key->problem = "the row was deleted while sending";
      } else {
        read_version = d[0][3].c_str();
        try {
          key->signer = std::make_shared<dkim::Signer>(d[0][1].c_str(), d[0][2].c_str(), domain, d[0][0].c_str());
        } catch (const dkim::KeyError& e) {
          key->problem = e.what();
        }
      }
    }
    if (!key->problem.empty() || read_version == version) keys_.put(tenant, domain, read_version, key);
    return key;
  }

  // Closed, or open but past open_until: half-open, this caller makes the one
  // trial, and the others keep skipping the relay until it settles.
  bool admit(Provider& prov) {
    std::lock_guard lock(mu_);
    if (prov.failures < breaker_failures_) return true;
    const auto now = Clock::now();
    if (now < prov.open_until) return false;
    prov.open_until = now + std::chrono::milliseconds(breaker_open_ms_);
    return true;
  }

  void settle_breaker(Provider& prov, bool ok) {
    std::lock_guard lock(mu_);
    if (ok) {
      prov.failures = 0;
      return;
    }
    if (++prov.failures >= breaker_failures_) prov.open_until = Clock::now() + std::chrono::milliseconds(breaker_open_ms_);
  }

  // When every relay's circuit is open, the earliest moment one reopens.
  std::optional<Clock::time_point> all_open_until() {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    std::optional<Clock::time_point> earliest;
    for (const auto& p : providers_) {
      if (p->failures < breaker_failures_ || now >= p->open_until) return std::nullopt;
      if (!earliest || p->open_until < *earliest) earliest = p->open_until;
    }
    return earliest;
  }

  std::string provider_names() const {
    std::string out;
    for (const auto& p : providers_) out += (out.empty() ? "" : " or ") + p->name;
    return out;
  }

  jobhost_plugins::PgPool pool_;
  std::vector<std::unique_ptr<Provider>> providers_;
  int breaker_failures_ = 5;
  long breaker_open_ms_ = 30000;
  std::string helo_;
  std::string relay_limiter_, domain_limiter_;  // limiter name prefixes
  std::string verp_domain_;                     // "" : the envelope sender is the From address
  struct {
    std::string url, mailto, secret;            // url "" : no List-Unsubscribe
    std::chrono::seconds ttl{0};
  } unsubscribe_;
  std::chrono::milliseconds deferral_hold_{60000};
  std::mutex mu_;
  email_send::VersionedCache<Template> templates_;
  email_send::VersionedCache<DomainKey> keys_;
  email_send::MessageClaims claims_{pool_};
  std::unique_ptr<email_send::OutcomeWriter> outcomes_;
  std::jthread janitor_;  // last: stopped first
};

}  // namespace

JOBHOST_PLUGIN(EmailSend, "email_send", "1.1.0", "email.send")
