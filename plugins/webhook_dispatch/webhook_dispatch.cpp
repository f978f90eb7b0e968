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
// The target's addresses are resolved here and each must be public unless
// inside settings.allow_cidrs; the connection is then pinned to the checked
// address (CURLOPT_RESOLVE), so DNS cannot answer differently a second time,
// and made directly (proxy variables are ignored: a proxy would connect to an
// address nobody checked).
//
// Every attempt that gets as far as the target check is recorded in
// app.webhook_deliveries (status code, error, duration); recording is best
// effort, so a database hiccup after a delivered POST does not send it again.
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <curl/curl.h>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/address_policy.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>

#include "webhook_http.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using jobhost::sdk::SettingsError;

constexpr const char* kVersion = "1.1.0";
constexpr size_t kKeptResponse = 300;  // bytes of a failed response quoted in the error

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

struct Response {
  long status = 0;
  std::string body;           // the first kKeptResponse bytes
  std::string retry_after;    // the header's value, if any
};

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Response*>(user);
  if (r->body.size() < kKeptResponse) r->body.append(data, std::min(size * n, kKeptResponse - r->body.size()));
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  const std::string line(data, size * n);
  const auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "retry-after") {
      std::string value = line.substr(colon + 1);
      const auto first = value.find_first_not_of(" \t");
      const auto last = value.find_last_not_of(" \t\r\n");
      static_cast<Response*>(user)->retry_after =
          first == std::string::npos ? "" : value.substr(first, last - first + 1);
    }
  }
  return size * n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const Job*>(user)->cancelled() ? 1 : 0;  // non-zero aborts the transfer
}

class WebhookDispatch : public jobhost::sdk::Plugin {
 public:
  explicit WebhookDispatch(const Settings& s)
      : pool_(s.require<std::string>("database_url"), s.get<int>("db_pool_size", 2)),
        timeout_ms_(s.get<long>("timeout_ms", 10000)),
        connect_timeout_ms_(s.get<long>("connect_timeout_ms", 5000)),
        max_retry_after_ms_(s.get<long long>("max_retry_after_ms", 3600000)) {
    if (timeout_ms_ < 1) throw SettingsError("settings.timeout_ms: must be > 0");
    if (connect_timeout_ms_ < 1) throw SettingsError("settings.connect_timeout_ms: must be > 0");
    if (max_retry_after_ms_ < 0) throw SettingsError("settings.max_retry_after_ms: must be >= 0");
    try {
      allow_ = jobhost_plugins::net::parse_allow_list(s.get<std::vector<std::string>>("allow_cidrs", {}), "allow_cidrs");
    } catch (const std::invalid_argument& e) {
      throw SettingsError(e.what());
    }
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

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

    std::string resolve;
    try {
      if (auto refused = jobhost_plugins::net::pin_target(url, allow_, "allow_cidrs", resolve)) {
        const std::string message = "webhook: " + *refused;
        record(0, message);
        return Result::permanent(message);
      }
    } catch (const std::runtime_error& e) {  // the name did not resolve: DNS may answer later
      const std::string message = "webhook: POST " + url + ": " + e.what();
      record(0, message);
      return Result::retry(message);
    }

    const std::string timestamp = std::to_string(std::time(nullptr));
    const std::string body =
        nlohmann::json{{"event", event}, {"event_id", event_id}, {"created_at", iso_now()}, {"data", p["data"]}}
            .dump();

    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) return Result::retry("webhook: curl_easy_init failed");
    curl_slist* headers = nullptr;
    for (const std::string& h : {std::string("Content-Type: application/json"),
                                 "User-Agent: jobhost-webhook/" + std::string(kVersion),
                                 "X-Jobhost-Event: " + event, "X-Jobhost-Event-Id: " + event_id,
                                 "X-Jobhost-Timestamp: " + timestamp,
                                 "X-Jobhost-Signature: " + webhook::signature_header(secret, timestamp, body),
                                 std::string("Expect:")}) {
      headers = curl_slist_append(headers, h.c_str());
    }
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers, curl_slist_free_all);
    curl_slist* pins = resolve.empty() ? nullptr : curl_slist_append(nullptr, resolve.c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> pin_list(pins, curl_slist_free_all);

    Response response;
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    if (pins != nullptr) curl_easy_setopt(c, CURLOPT_RESOLVE, pins);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms_);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms_);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &response);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &job);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);

    const auto posted = std::chrono::steady_clock::now();
    const CURLcode rc = curl_easy_perform(c);
    const long ms = static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - posted).count());
    const std::string where =
        "POST " + url + (resolve.empty() ? "" : " (" + resolve.substr(resolve.find(':', resolve.find(':') + 1) + 1) + ")");
    if (rc != CURLE_OK) {
      const std::string message = rc == CURLE_ABORTED_BY_CALLBACK
                                      ? "webhook: cancelled during " + where
                                      : "webhook: " + where + " failed after " + std::to_string(ms) +
                                            " ms: " + curl_easy_strerror(rc);
      record(0, message);
      return Result::retry(message);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
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
        if (const auto delay = webhook::retry_after_ms(response.retry_after, std::time(nullptr))) {
          return Result::retry_after(std::chrono::milliseconds(std::min(*delay, max_retry_after_ms_)),
                                     message + " (Retry-After: " + response.retry_after + ")");
        }
        return Result::retry(message);
      case webhook::Verdict::kPermanent:
        break;
    }
    if (response.status >= 300 && response.status < 400) {
      return Result::permanent(message + " (redirects are not followed: update the endpoint's URL)");
    }
    return Result::permanent(message);
  }

 private:
  jobhost_plugins::PgPool pool_;
  long timeout_ms_;
  long connect_timeout_ms_;
  long long max_retry_after_ms_;
  std::vector<jobhost_plugins::net::Cidr> allow_;
};

}  // namespace

JOBHOST_PLUGIN(WebhookDispatch, "webhook_dispatch", kVersion, "webhook.dispatch")
