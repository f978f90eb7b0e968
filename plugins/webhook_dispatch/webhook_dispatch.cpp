// webhook_dispatch: the job type "webhook.dispatch". POSTs one event to one of
// a tenant's webhook endpoints, signed.
//
// Payload: {"tenant_id", "endpoint_id", "event", "event_id", "data"}.
// Request: JSON {"event", "event_id", "created_at", "data"} with headers
//   X-Jobhost-Event, X-Jobhost-Event-Id, X-Jobhost-Timestamp (Unix seconds) and
//   X-Jobhost-Signature: t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>.
// A receiver recomputes the HMAC over the timestamp header, a dot and the raw
// body, compares in constant time, and rejects old timestamps (replays).
//
// Outcome: 2xx done; 408 and 429 retried; other 4xx and 3xx (redirects are not
// followed: their target was never checked) fail for good; 5xx, timeouts,
// refused connections and DNS failures retried. Retry-After (seconds or an
// HTTP date) sets the delay, capped by settings.max_retry_after_ms. An unknown
// endpoint (or another tenant's) fails for good; an inactive one completes the
// job without a request, logged: the tenant switched it off on purpose.
//
// The request goes through the plugins' HTTP client
// (jobhost_plugins/http_client.hpp): the target's addresses are resolved and
// each must be public unless inside settings.allow_cidrs; the connection is
// pinned to the checked address, so DNS cannot answer differently a second
// time, and made directly (proxy variables are ignored: a proxy would connect
// to an address nobody checked). At most kKeptResponse bytes of an answer are
// read: its status is what counts.
//
// Every attempt that gets as far as the target check is recorded in
// app.webhook_deliveries (status code, error, duration); recording is best
// effort, so a database hiccup after a delivered POST does not send it again.
#include <chrono>
#include <ctime>
#include <string>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/http_client.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

#include "webhook_http.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;

constexpr const char* kVersion = "1.2.0";
constexpr size_t kKeptResponse = 300;  // bytes of an answer read, and quoted in the error of a failed one

constexpr const char* kRecordDelivery = R"SQL(
INSERT INTO app.webhook_deliveries
  (tenant_id, endpoint_id, job_id, event, event_id, attempt, status_code, error, duration_ms)
VALUES ($1, $2, $3::uuid, $4, $5, $6, nullif($7, 0), nullif($8, ''), $9))SQL";

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

const jobhost_plugins::SettingsReader::Keys kKeys = {
    "database_url", "db_pool_size", "timeout_ms", "connect_timeout_ms", "max_retry_after_ms", "allow_cidrs"};

jobhost_plugins::http::Limits http_limits(const jobhost_plugins::SettingsReader& s) {
  return {static_cast<long>(s.integer("timeout_ms", 10000, 1, 86400000)),
          static_cast<long>(s.integer("connect_timeout_ms", 5000, 1, 86400000)), 0};
}

class WebhookDispatch : public jobhost::sdk::Plugin {
 public:
  explicit WebhookDispatch(const Settings& settings)
      : WebhookDispatch(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit WebhookDispatch(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 2),
        max_retry_after_ms_(s.integer("max_retry_after_ms", 3600000, 0, 100LL * 365 * 24 * 3600 * 1000)),
        http_(jobhost_plugins::http::allow_list(s, "allow_cidrs"), "allow_cidrs", http_limits(s)) {}

  std::string validate(std::string_view, const nlohmann::json& p) override {
    using namespace jobhost_plugins;
    std::string error = first_error(need_string(p, "tenant_id", 200), need_string(p, "endpoint_id", 200),
                                    need_string(p, "event", 200), need_string(p, "event_id", 500),
                                    p.contains("data") ? "" : "payload.data: is required");
    if (!error.empty()) return error;
    // Both are sent as header values too.
    for (const char* key : {"event", "event_id"}) {
      if (!webhook::header_safe(p[key].get_ref<const std::string&>())) {
        return std::string("payload.") + key + ": must not contain control characters (CR, LF, ...)";
      }
    }
    return {};
  }

  Result handle(Job& job) override {
    const nlohmann::json& p = job.payload();
    const std::string tenant = p["tenant_id"], endpoint = p["endpoint_id"];
    std::string url, secret;
    bool active = false;
    {
      auto conn = pool_.acquire();
      pqxx::nontransaction tx(*conn);
      const pqxx::result r = tx.exec_params(
          "SELECT url, secret, active FROM app.webhook_endpoints WHERE tenant_id = $1 AND id = $2", tenant, endpoint);
      if (r.empty()) {
        return Result::permanent("payload.endpoint_id: no webhook endpoint '" + endpoint + "' for tenant '" + tenant +
                                 "'");
      }
      url = r[0][0].c_str();
      secret = r[0][1].c_str();
      active = r[0][2].as<bool>();
    }
    if (!active) {
      // The tenant switched it off after the event: delivering now would be
      // unwanted, and failing would fill the DLQ with nothing to fix.
      job.log_info("endpoint " + endpoint + " is inactive; event " + p["event_id"].get<std::string>() + " not sent");
      return Result::ok();
    }

    const std::string event = p["event"], event_id = p["event_id"];
    const auto started = std::chrono::steady_clock::now();
    const auto record = [&](long status, const std::string& error) {
      const long long ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
      try {
        auto conn = pool_.acquire();
        pqxx::nontransaction tx(*conn);
        tx.exec_params(kRecordDelivery, tenant, endpoint, std::string(job.id()), event, event_id, job.attempt(),
                       static_cast<int>(status), error, static_cast<int>(std::min<long long>(ms, 1LL << 30)));
      } catch (const std::exception& e) {
        job.log_warn("webhook " + event_id + ": delivery not recorded in app.webhook_deliveries: " + e.what());
      }
    };

    const std::string timestamp = std::to_string(std::time(nullptr));
    namespace http = jobhost_plugins::http;
    http::Request request;
    request.method = "POST";
    request.url = url;
    request.body =
        nlohmann::json{{"event", event}, {"event_id", event_id}, {"created_at", iso_now()}, {"data", p["data"]}}
            .dump();
    request.headers = {"Content-Type: application/json",
                       "User-Agent: jobhost-webhook/" + std::string(kVersion),
                       "X-Jobhost-Event: " + event,
                       "X-Jobhost-Event-Id: " + event_id,
                       "X-Jobhost-Timestamp: " + timestamp,
                       "X-Jobhost-Signature: " + webhook::signature_header(secret, timestamp, request.body),
                       "Expect:"};
    request.keep_body = kKeptResponse;
    request.cancelled = [&] { return job.cancelled(); };
    const http::Response response = http_.send(request);

    if (response.failure == http::Failure::kRefused) {
      const std::string message = "webhook: " + response.error;
      record(0, message);
      return Result::permanent(message);
    }
    if (response.failure == http::Failure::kUnresolved) {  // DNS may answer later
      const std::string message = "webhook: POST " + url + ": " + response.error;
      record(0, message);
      return Result::retry(message);
    }
    const std::string where = "POST " + url + (response.address.empty() ? "" : " (" + response.address + ")");
    const long ms = response.elapsed_ms;
    if (response.failure != http::Failure::kNone) {
      const std::string message =
          response.failure == http::Failure::kCancelled
              ? "webhook: cancelled during " + where
              : "webhook: " + where + " failed after " + std::to_string(ms) + " ms: " + response.error;
      record(0, message);
      return Result::retry(message);
    }
    const std::string status = "HTTP " + std::to_string(response.status);
    job.log_info("webhook " + event + " " + event_id + ": " + where + " -> " + status + " in " + std::to_string(ms) +
                 " ms");
    const webhook::Verdict verdict = webhook::classify(response.status);
    const std::string message = verdict == webhook::Verdict::kDelivered
                                    ? std::string()
                                    : "webhook: " + where + " answered " + status +
                                          (response.body.empty() ? "" : ": " + response.body);
    record(response.status, message);
    switch (verdict) {
      case webhook::Verdict::kDelivered:
        return Result::ok();
      case webhook::Verdict::kRetry:
        if (const auto delay = webhook::retry_after_ms(response.header("retry-after"), std::time(nullptr))) {
          return Result::retry_after(std::chrono::milliseconds(std::min(*delay, max_retry_after_ms_)),
                                     message + " (Retry-After: " + response.header("retry-after") + ")");
        }
        return Result::retry(message);
      case webhook::Verdict::kPermanent:
        break;
    }
    if (response.redirect()) {
      return Result::permanent(message + " (redirects are not followed: update the endpoint's URL)");
    }
    return Result::permanent(message);
  }

 private:
  jobhost_plugins::PgPool pool_;
  long long max_retry_after_ms_;
  jobhost_plugins::http::Client http_;
};

}  // namespace

JOBHOST_PLUGIN(WebhookDispatch, "webhook_dispatch", kVersion, "webhook.dispatch")
