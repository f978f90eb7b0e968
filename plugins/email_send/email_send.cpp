// email_send: the job type "email.send". Renders a tenant's template for one
// recipient and hands it to the first SMTP relay that takes it.
//
// Payload: {"recipient", "template_id", "variables", "tenant_id", "campaign_id"?}.
// Settings: database_url, db_pool_size (4), providers: [{name, url, username?,
// password?, timeout_ms?}] tried in order (primary, then fallbacks),
// circuit_breaker: {failures: 5, open_ms: 30000}, helo (the EHLO name); any
// other key, at any level, is refused naming it.
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
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <curl/curl.h>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/email_address.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

#include "render.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kLoadTemplate =
    "SELECT from_email, subject, html_body, text_body FROM app.email_templates WHERE tenant_id = $1 AND id = $2";
constexpr const char* kCampaignExists = "SELECT 1 FROM app.campaigns WHERE tenant_id = $1 AND id = $2";
constexpr const char* kClaim =
    "INSERT INTO app.email_messages (tenant_id, job_id, campaign_id, template_id, recipient, subject, status, "
    "message_id, attempt) VALUES ($1, $2::uuid, $3, $4, $5, $6, 'sending', $7, $8) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING id";
constexpr const char* kPrior =
    "SELECT id, status, attempt, coalesce(provider, '') FROM app.email_messages "
    "WHERE tenant_id = $1 AND job_id = $2::uuid FOR UPDATE";
constexpr const char* kReclaim =
    "UPDATE app.email_messages SET status = 'sending', attempt = $3, subject = $4, provider = NULL, error = NULL "
    "WHERE tenant_id = $1 AND id = $2";
constexpr const char* kSuppression = "SELECT reason FROM app.suppressions WHERE tenant_id = $1 AND email = $2";
constexpr const char* kSetStatus =
    "UPDATE app.email_messages SET status = $3, provider = nullif($4, ''), error = nullif($5, ''), "
    "sent_at = CASE WHEN $3 = 'sent' THEN now() END WHERE tenant_id = $1 AND id = $2";
constexpr const char* kEvent =
    "INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail) "
    "VALUES ($1, $2, $3, $4, $5, $6::jsonb)";

// ---- settings -------------------------------------------------------------

struct Provider {
  std::string name, url, username, password;
  long timeout_ms = 30000;
  // Circuit breaker, under EmailSend::mu_: consecutive failures, and while
  // open (failures >= threshold) the time before which it is skipped.
  int failures = 0;
  Clock::time_point open_until{};
};

const jobhost_plugins::SettingsReader::Keys kKeys = {"database_url", "db_pool_size", "providers",
                                                     "circuit_breaker", "helo"};

// ---- one SMTP transaction ---------------------------------------------------

// What one relay did with the message.
enum class Outcome {
  kSent,               // 250 after the end of the message
  kNotTaken,           // known not to have the message: refused or never reached
  kRecipientRejected,  // RCPT answered 5xx
  kUnknown,            // the whole message went out, no answer came back
};

struct Transfer {
  const std::string* message;
  size_t sent = 0;
  const Job* job;
  std::string refusal;  // the relay's last 4xx/5xx reply line, for error messages
};

size_t read_message(char* out, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = std::min(size * n, t->message->size() - t->sent);
  std::memcpy(out, t->message->data() + t->sent, len);
  t->sent += len;
  return len;
}

// Cancelling aborts only while the relay cannot yet have the message: once it
// is all out, aborting would turn a probable delivery into an unknown one.
int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  const auto* t = static_cast<const Transfer*>(user);
  return t->job->cancelled() && t->sent < t->message->size() ? 1 : 0;
}

int on_debug(CURL*, curl_infotype type, char* data, size_t size, void* user) {
  if (type != CURLINFO_HEADER_IN) return 0;
  std::string line(data, std::min<size_t>(size, 300));
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (!line.empty() && (line[0] == '4' || line[0] == '5')) static_cast<Transfer*>(user)->refusal = line;
  return 0;
}

Outcome transact(const Job& job, const Provider& prov, const std::string& helo, const std::string& from,
                 const std::string& to, const std::string& message, std::string& error) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    error = "curl_easy_init failed";
    return Outcome::kNotTaken;
  }
  CURL* c = curl.get();
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> rcpt(curl_slist_append(nullptr, ("<" + to + ">").c_str()),
                                                                   curl_slist_free_all);
  Transfer t{&message, 0, &job, {}};
  char errbuf[CURL_ERROR_SIZE] = {0};
  // The URL's path is the name libcurl gives in EHLO.
  const bool has_path = prov.url.find('/', prov.url.find("://") + 3) != std::string::npos;
  const std::string url = has_path || helo.empty() ? prov.url : prov.url + "/" + helo;
  const std::string mail_from = "<" + from + ">";
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_FROM, mail_from.c_str());
  curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt.get());
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(c, CURLOPT_READFUNCTION, read_message);
  curl_easy_setopt(c, CURLOPT_READDATA, &t);
  curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, prov.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min(prov.timeout_ms, 10000L));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);  // feeds on_debug only; nothing is printed
  curl_easy_setopt(c, CURLOPT_DEBUGFUNCTION, on_debug);
  curl_easy_setopt(c, CURLOPT_DEBUGDATA, &t);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  if (!prov.username.empty()) {
    curl_easy_setopt(c, CURLOPT_USERNAME, prov.username.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, prov.password.c_str());
    // Credentials go over TLS or not at all.
    if (prov.url.rfind("smtps://", 0) != 0) curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_ALL));
  } else if (prov.url.rfind("smtps://", 0) != 0) {
    curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_TRY));
  }
  const CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) return Outcome::kSent;

  long code = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  if (!t.refusal.empty()) error += " (\"" + t.refusal + "\")";
  if (rc == CURLE_ABORTED_BY_CALLBACK) error = "cancelled";
  if (std::strncmp(errbuf, "RCPT failed", 11) == 0 && code >= 500 && code < 600) return Outcome::kRecipientRejected;
  // Until the last byte is out the relay cannot have the whole message; after
  // it, only an explicit refusal of the message says it was not taken.
  if (t.sent < message.size()) return Outcome::kNotTaken;
  if (rc == CURLE_WEIRD_SERVER_REPLY && code >= 400 && code < 600) return Outcome::kNotTaken;
  return Outcome::kUnknown;
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
             "must be a non-empty list of relays [{name, url, username?, password?, timeout_ms?}]");
    }
    std::set<std::string> names;
    for (const auto& p : s.mappings("providers", {"name", "url", "username", "password", "timeout_ms"})) {
      Provider prov;
      prov.name = p.required_string("name");
      prov.url = p.required_string("url");
      prov.username = p.string("username", "");
      prov.password = p.string("password", "");
      prov.timeout_ms = static_cast<long>(p.integer("timeout_ms", 30000, 1, 86400000));
      if (prov.name.empty()) p.fail("name", "must not be empty");
      if (!names.insert(prov.name).second) p.fail("name", "'" + prov.name + "' names two providers");
      if ((prov.url.rfind("smtp://", 0) != 0 && prov.url.rfind("smtps://", 0) != 0) ||
          prov.url.size() <= prov.url.find("://") + 3) {
        p.fail("url", "must be smtp://HOST[:PORT] or smtps://HOST[:PORT], got '" + prov.url + "'");
      }
      if (prov.password.size() && prov.username.empty()) p.fail("password", "is set without a username");
      providers_.push_back(prov);
    }
    const jobhost_plugins::SettingsReader breaker = s.mapping("circuit_breaker", {"failures", "open_ms"});
    breaker_failures_ = static_cast<int>(breaker.integer("failures", 5, 1, 86400000));
    breaker_open_ms_ = static_cast<long>(breaker.integer("open_ms", 30000, 1, 86400000));
    helo_ = s.string("helo", "");
    if (helo_.find_first_of("/?# \t\r\n") != std::string::npos) s.fail("helo", "must be a host name");
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

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

    std::string from;
    mail::Rendered r;
    long long row = 0;
    {
      // The connection is given back before any relay is contacted: with 100
      // workers and a pool of 10, holding it through SMTP would cap sending
      // at 10 messages at a time.
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      const pqxx::result t = tx.exec_params(kLoadTemplate, tenant, template_id);
      if (t.empty()) {
        return Result::permanent("payload.template_id: no template '" + template_id + "' for tenant '" + tenant + "'");
      }
      if (campaign && tx.exec_params(kCampaignExists, tenant, *campaign).empty()) {
        return Result::permanent("payload.campaign_id: no campaign '" + *campaign + "' for tenant '" + tenant + "'");
      }
      from = t[0][0].c_str();
      if (const auto why = jobhost_plugins::email_problem(from)) {
        return Result::permanent("template '" + template_id + "': from_email '" + from + "' " + *why);
      }
      try {
        r.subject = mail::render(t[0][1].c_str(), p["variables"], false);
        r.html = mail::render(t[0][2].c_str(), p["variables"], true);
        r.text = mail::render(t[0][3].c_str(), p["variables"], false);
      } catch (const mail::MissingVariable& e) {
        return Result::permanent(e.what());
      }

      // Claim the job's message row, or learn what an earlier attempt did.
      const pqxx::result claimed = tx.exec_params(kClaim, tenant, job_id, campaign, template_id, recipient, r.subject,
                                                  message_id, job.attempt());
      if (claimed.empty()) {
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
        tx.exec_params(kReclaim, tenant, row, job.attempt(), r.subject);
      } else {
        row = claimed[0][0].as<long long>();
      }

      const pqxx::result sup = tx.exec_params(kSuppression, tenant, recipient);
      if (!sup.empty()) {
        const std::string reason = sup[0][0].c_str();
        tx.exec_params(kSetStatus, tenant, row, "suppressed", "", "suppressed: " + reason);
        tx.exec_params(kEvent, tenant, row, campaign, recipient, "suppressed", json{{"reason", reason}}.dump());
        tx.commit();
        job.log_info("recipient " + recipient + " is suppressed (" + reason + "); " + message_id + " not sent");
        return Result::ok();
      }
      tx.commit();
    }

    const std::string message = mail::mime(from, recipient, message_id, r, std::time(nullptr));
    std::vector<std::string> errors;
    for (Provider& prov : providers_) {
      if (job.cancelled()) {
        errors.push_back("cancelled before trying " + prov.name);
        break;
      }
      if (!admit(prov)) {
        errors.push_back(prov.name + ": circuit open");
        continue;
      }
      std::string error;
      const Outcome outcome = transact(job, prov, helo_, from, recipient, message, error);
      settle_breaker(prov, outcome == Outcome::kSent || outcome == Outcome::kRecipientRejected);
      switch (outcome) {
        case Outcome::kSent:
          record(tenant, row, "sent", prov.name, "", campaign, recipient,
                 json{{"provider", prov.name}, {"message_id", message_id}});
          job.log_info("sent " + message_id + " to " + recipient + " via " + prov.name);
          return Result::ok();
        case Outcome::kRecipientRejected: {
          const std::string why = prov.name + " refused the recipient: " + error;
          record(tenant, row, "failed", prov.name, why, campaign, recipient,
                 json{{"provider", prov.name}, {"reason", why}});
          return Result::permanent("payload.recipient: '" + recipient + "' " + why);
        }
        case Outcome::kUnknown: {
          // The relay may have the message: no other relay may get it too.
          const std::string why = prov.name + ": " + error + " after the whole message was handed over";
          auto conn = pool_.acquire();
          pqxx::work tx(*conn);
          tx.exec_params(kSetStatus, tenant, row, "sending", prov.name, why);
          tx.commit();
          return Result::permanent("delivery state unknown: " + why + "; not sending " + message_id +
                                   " twice (look it up in " + prov.name + "'s log)");
        }
        case Outcome::kNotTaken:
          errors.push_back(prov.name + ": " + error);
          job.log_warn("relay " + prov.name + " did not take " + message_id + ": " + error);
          break;
      }
    }

    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "; ") + e;
    {
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      tx.exec_params(kSetStatus, tenant, row, "failed", "", all);
      tx.commit();
    }
    if (const auto reopen = all_open_until()) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*reopen - Clock::now());
      return Result::retry_after(std::max(wait, std::chrono::milliseconds(1)), "every relay's circuit is open: " + all);
    }
    return Result::retry("no relay took " + message_id + ": " + all);
  }

 private:
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
      if (p.failures < breaker_failures_ || now >= p.open_until) return std::nullopt;
      if (!earliest || p.open_until < *earliest) earliest = p.open_until;
    }
    return earliest;
  }

  std::string provider_names() const {
    std::string out;
    for (const auto& p : providers_) out += (out.empty() ? "" : " or ") + p.name;
    return out;
  }

  // Writes the outcome of a transaction that reached a relay. It is tried for
  // a few seconds: should it still fail, the row stays 'sending' and a retry
  // reports the delivery state as unknown rather than send a second copy.
  void record(const std::string& tenant, long long row, const std::string& status, const std::string& provider,
              const std::string& error, const std::optional<std::string>& campaign, const std::string& recipient,
              const json& detail) {
    for (int attempt = 1;; ++attempt) {
      try {
        auto conn = pool_.acquire();
        pqxx::work tx(*conn);
        tx.exec_params(kSetStatus, tenant, row, status, provider, error);
        tx.exec_params(kEvent, tenant, row, campaign, recipient, status, detail.dump());
        tx.commit();
        return;
      } catch (const std::exception& e) {
        if (attempt == 4) {
          throw std::runtime_error("message " + status + " via " + provider + " but not recorded: " + e.what());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt * attempt));
      }
    }
  }

  jobhost_plugins::PgPool pool_;
  std::vector<Provider> providers_;
  int breaker_failures_ = 5;
  long breaker_open_ms_ = 30000;
  std::string helo_;
  std::mutex mu_;
};

}  // namespace

JOBHOST_PLUGIN(EmailSend, "email_send", "1.0.1", "email.send")
