// email_send: the job type "email.send". Renders a tenant's template for one
// recipient and hands it to an SMTP relay.
//
// Payload: {"recipient", "template_id", "variables", "tenant_id", "campaign_id"?}.
// Settings: database_url, db_pool_size (4), providers: [{name, url, username?,
// password?, timeout_ms?}] tried in order (primary, then fallbacks),
// circuit_breaker: {failures: 5, open_ms: 30000}.
//
// Never twice per job id: app.email_messages has one row per job, claimed as
// 'sending' (committed) before any relay is contacted. A failure known to have
// happened before the message was handed over (connection refused, MAIL or
// RCPT refused, timeout before DATA ended) sets it to 'failed', and a later
// attempt may send. 'sent' or 'suppressed' make a later attempt a no-op. A row
// still 'sending' means an attempt died while a relay may have accepted the
// message: it is not sent again; the job fails naming the Message-ID to look
// up in the relay's log. Every message carries Message-ID <job-id@jobhost>.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <curl/curl.h>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/email_address.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>

#include "render.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using jobhost::sdk::SettingsError;
using Clock = std::chrono::steady_clock;

struct Provider {
  std::string name, url, username, password;
  long timeout_ms = 30000;
  // Circuit breaker state, under the plugin's mutex.
  int failures = 0;
  Clock::time_point open_until{};
};

struct Upload {
  const std::string* data;
  size_t sent = 0;
};

size_t read_message(char* out, size_t size, size_t n, void* user) {
  auto* u = static_cast<Upload*>(user);
  const size_t len = std::min(size * n, u->data->size() - u->sent);
  std::memcpy(out, u->data->data() + u->sent, len);
  u->sent += len;
  return len;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const Job*>(user)->cancelled() ? 1 : 0;
}

// What one relay did with the message.
enum class Sent { kYes, kNo, kUnknown };

class EmailSend : public jobhost::sdk::Plugin {
 public:
  explicit EmailSend(const Settings& s) : pool_(s.require<std::string>("database_url"), s.get<int>("db_pool_size", 4)) {
    const nlohmann::json list = s.require<nlohmann::json>("providers");
    if (!list.is_array() || list.empty()) throw SettingsError("settings.providers: must be a non-empty list of relays");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string at = "settings.providers[" + std::to_string(i) + "]";
      const auto& p = list[i];
      if (!p.is_object() || !p.contains("name") || !p["name"].is_string() || !p.contains("url") || !p["url"].is_string()) {
        throw SettingsError(at + ": needs name and url (smtp:// or smtps://)");
      }
      Provider prov;
      prov.name = p["name"];
      prov.url = p["url"];
      if (prov.url.rfind("smtp://", 0) != 0 && prov.url.rfind("smtps://", 0) != 0) {
        throw SettingsError(at + ".url: must start with smtp:// or smtps://, got " + prov.url);
      }
      prov.username = p.value("username", "");
      prov.password = p.value("password", "");
      prov.timeout_ms = p.value("timeout_ms", 30000L);
      if (prov.timeout_ms < 1) throw SettingsError(at + ".timeout_ms: must be > 0");
      providers_.push_back(prov);
    }
    const nlohmann::json breaker = s.get<nlohmann::json>("circuit_breaker", nlohmann::json::object());
    breaker_failures_ = breaker.value("failures", 5);
    breaker_open_ms_ = breaker.value("open_ms", 30000L);
    if (breaker_failures_ < 1) throw SettingsError("settings.circuit_breaker.failures: must be at least 1");
    if (breaker_open_ms_ < 1) throw SettingsError("settings.circuit_breaker.open_ms: must be > 0");
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

  std::string validate(std::string_view, const nlohmann::json& p) override {
    using namespace jobhost_plugins;
    if (auto e = first_error(need_string(p, "recipient", 254), need_string(p, "template_id", 200),
                             need_string(p, "tenant_id", 200), need_object(p, "variables"),
                             opt_string(p, "campaign_id", 200));
        !e.empty()) {
      return e;
    }
    if (const auto why = email_problem(normalize_email(p["recipient"].get<std::string>()))) {
      return "payload.recipient: '" + p["recipient"].get<std::string>() + "' " + *why;
    }
    for (const auto& [key, value] : p["variables"].items()) {
      if (value.is_object() || value.is_array()) return "payload.variables." + key + ": must be a string, number or boolean";
    }
    return {};
  }

  Result handle(Job& job) override {
    const nlohmann::json& p = job.payload();
    const std::string tenant = p["tenant_id"], template_id = p["template_id"];
    const std::string recipient = jobhost_plugins::normalize_email(p["recipient"].get<std::string>());
    const std::optional<std::string> campaign =
        p.contains("campaign_id") ? std::optional<std::string>(p["campaign_id"].get<std::string>()) : std::nullopt;
    const std::string job_id(job.id());
    const std::string message_id = "<" + job_id + "@jobhost>";
    auto conn = pool_.acquire();

    std::string from;
    mail::Rendered r;
    {
      pqxx::nontransaction tx(*conn);
      const pqxx::result t = tx.exec_params(
          "SELECT from_email, subject, html_body, text_body FROM app.email_templates WHERE tenant_id = $1 AND id = $2",
          tenant, template_id);
      if (t.empty()) return Result::permanent("payload.template_id: no template '" + template_id + "' for tenant '" + tenant + "'");
      if (campaign && tx.exec_params("SELECT 1 FROM app.campaigns WHERE tenant_id = $1 AND id = $2", tenant, *campaign).empty()) {
        return Result::permanent("payload.campaign_id: no campaign '" + *campaign + "' for tenant '" + tenant + "'");
      }
      from = t[0][0].c_str();
      try {
        r.subject = mail::render(t[0][1].c_str(), p["variables"], false);
        r.html = mail::render(t[0][2].c_str(), p["variables"], true);
        r.text = mail::render(t[0][3].c_str(), p["variables"], false);
      } catch (const mail::MissingVariable& e) {
        return Result::permanent(e.what());
      }
    }

    // Claim the job's message row, or learn what an earlier attempt did.
    long long row = 0;
    {
      pqxx::work tx(*conn);
      const pqxx::result claimed = tx.exec_params(
          "INSERT INTO app.email_messages (tenant_id, job_id, campaign_id, template_id, recipient, subject, status, "
          "message_id, attempt) VALUES ($1, $2::uuid, $3, $4, $5, $6, 'sending', $7, $8) "
          "ON CONFLICT (job_id) DO NOTHING RETURNING id",
          tenant, job_id, campaign, template_id, recipient, r.subject, message_id, job.attempt());
      if (claimed.empty()) {
        const pqxx::row prior = tx.exec_params1(
            "SELECT id, status, attempt, coalesce(provider, '') FROM app.email_messages WHERE job_id = $1::uuid FOR UPDATE",
            job_id);
        const std::string status = prior[1].c_str();
        if (status == "sent" || status == "suppressed") {
          tx.commit();
          job.log_info("message " + message_id + " was already " + status + " by attempt " + prior[2].c_str() +
                       "; not sending again");
          return Result::ok();
        }
        if (status == "sending") {
          tx.commit();
          return Result::permanent("delivery state unknown: attempt " + std::string(prior[2].c_str()) +
                                   " stopped while handing Message-ID " + message_id + " to " +
                                   (prior[3].size() ? prior[3].c_str() : std::string("a relay")) +
                                   "; not sending it twice (check the relay's log for that Message-ID)");
        }
        tx.exec_params("UPDATE app.email_messages SET status = 'sending', attempt = $2, error = NULL WHERE id = $1",
                       prior[0].as<long long>(), job.attempt());
        row = prior[0].as<long long>();
      } else {
        row = claimed[0][0].as<long long>();
      }
      tx.commit();
    }

    {
      pqxx::work tx(*conn);
      const pqxx::result sup = tx.exec_params(
          "SELECT reason FROM app.suppressions WHERE tenant_id = $1 AND email = $2", tenant, recipient);
      if (!sup.empty()) {
        const std::string reason = sup[0][0].c_str();
        tx.exec_params("UPDATE app.email_messages SET status = 'suppressed', error = $2 WHERE id = $1", row,
                       "suppressed: " + reason);
        tx.exec_params("INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail) "
                       "VALUES ($1, $2, $3, $4, 'suppressed', jsonb_build_object('reason', $5::text))",
                       tenant, row, campaign, recipient, reason);
        tx.commit();
        job.log_info("recipient " + recipient + " is suppressed (" + reason + "); not sent");
        return Result::ok();
      }
    }

    const std::string message = mail::mime(from, recipient, message_id, r, std::time(nullptr));
    std::vector<std::string> errors;
    std::optional<Clock::time_point> earliest_reopen;
    for (Provider& prov : providers_) {
      if (!admit(prov, earliest_reopen)) {
        errors.push_back(prov.name + ": circuit open");
        continue;
      }
      std::string error;
      const Sent sent = send(job, prov, from, recipient, message, error);
      settle_breaker(prov, sent != Sent::kNo);
      if (sent == Sent::kYes) {
        pqxx::work tx(*conn);
        tx.exec_params("UPDATE app.email_messages SET status = 'sent', provider = $2, sent_at = now() WHERE id = $1",
                       row, prov.name);
        tx.exec_params("INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail) "
                       "VALUES ($1, $2, $3, $4, 'sent', jsonb_build_object('provider', $5::text))",
                       tenant, row, campaign, recipient, prov.name);
        tx.commit();
        job.log_info("sent " + message_id + " to " + recipient + " via " + prov.name);
        return Result::ok();
      }
      if (sent == Sent::kUnknown) {
        // The relay may have the message: another relay must not get it too.
        pqxx::work tx(*conn);
        tx.exec_params("UPDATE app.email_messages SET provider = $2, error = $3 WHERE id = $1", row, prov.name, error);
        tx.commit();
        return Result::permanent("delivery state unknown: " + prov.name + " " + error + " after the whole message of " +
                                 message_id + " was handed over; not sending it twice");
      }
      errors.push_back(prov.name + ": " + error);
      job.log_warn("relay " + prov.name + " failed for " + message_id + ": " + error + "; trying the next one");
    }
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "; ") + e;
    {
      pqxx::work tx(*conn);
      tx.exec_params("UPDATE app.email_messages SET status = 'failed', error = $2 WHERE id = $1", row, all);
      tx.commit();
    }
    if (earliest_reopen && every_circuit_open()) {
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(*earliest_reopen - Clock::now());
      return Result::retry_after(std::max(wait, std::chrono::milliseconds(0)), "every relay's circuit is open: " + all);
    }
    return Result::retry("no relay took the message: " + all);
  }

 private:
  // Closed, or open but past open_until (half-open: one trial goes through).
  bool admit(Provider& prov, std::optional<Clock::time_point>& earliest) {
    std::lock_guard lock(mu_);
    if (prov.failures < breaker_failures_) return true;
    const auto now = Clock::now();
    if (now >= prov.open_until) {
      prov.open_until = now + std::chrono::milliseconds(breaker_open_ms_);  // other jobs wait for this trial
      return true;
    }
    if (!earliest || prov.open_until < *earliest) earliest = prov.open_until;
    return false;
  }

  void settle_breaker(Provider& prov, bool ok) {
    std::lock_guard lock(mu_);
    if (ok) {
      prov.failures = 0;
      return;
    }
    if (++prov.failures >= breaker_failures_) prov.open_until = Clock::now() + std::chrono::milliseconds(breaker_open_ms_);
  }

  bool every_circuit_open() {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    for (const auto& p : providers_) {
      if (p.failures < breaker_failures_ || now >= p.open_until) return false;
    }
    return true;
  }

  Sent send(Job& job, const Provider& prov, const std::string& from, const std::string& to, const std::string& message,
            std::string& error) {
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    CURL* c = curl.get();
    curl_slist* rcpt = curl_slist_append(nullptr, ("<" + to + ">").c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> rcpts(rcpt, curl_slist_free_all);
    Upload upload{&message};
    curl_easy_setopt(c, CURLOPT_URL, prov.url.c_str());
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, ("<" + from + ">").c_str());
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_message);
    curl_easy_setopt(c, CURLOPT_READDATA, &upload);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, prov.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, std::min(prov.timeout_ms, 10000L));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &job);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (!prov.username.empty()) {
      curl_easy_setopt(c, CURLOPT_USERNAME, prov.username.c_str());
      curl_easy_setopt(c, CURLOPT_PASSWORD, prov.password.c_str());
    }
    if (prov.url.rfind("smtps://", 0) != 0) curl_easy_setopt(c, CURLOPT_USE_SSL, static_cast<long>(CURLUSESSL_TRY));
    const CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) return Sent::kYes;
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    error = std::string(curl_easy_strerror(rc)) + (code > 0 ? " (SMTP " + std::to_string(code) + ")" : "");
    // Whole message out and no final answer: the relay may have queued it.
    const bool handed_over = upload.sent == message.size() &&
                             (rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING);
    return handed_over ? Sent::kUnknown : Sent::kNo;
  }

  jobhost_plugins::PgPool pool_;
  std::vector<Provider> providers_;
  int breaker_failures_ = 5;
  long breaker_open_ms_ = 30000;
  std::mutex mu_;
};

}  // namespace

JOBHOST_PLUGIN(EmailSend, "email_send", "1.0.0", "email.send")
