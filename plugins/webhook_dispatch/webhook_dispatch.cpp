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
// HTTP date) sets the delay, capped by settings.max_retry_after_ms.
//
// The target's addresses are resolved here and each must be public unless
// inside settings.allow_cidrs; the connection is then pinned to the checked
// address (CURLOPT_RESOLVE), so DNS cannot answer differently a second time.
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/address_policy.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>


namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using jobhost::sdk::SettingsError;

constexpr const char* kVersion = "1.0.0";
constexpr size_t kKeptResponse = 300;  // bytes of a failed response quoted in the error

std::string hex(const unsigned char* p, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string hmac_sha256_hex(const std::string& key, const std::string& message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
       message.size(), mac, &len);
  return hex(mac, len);
}

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

// Milliseconds a Retry-After value asks for; nullopt when absent or unreadable.
std::optional<long long> retry_after_ms(const std::string& value) {
  if (value.empty()) return std::nullopt;
  if (value.find_first_not_of("0123456789") == std::string::npos && value.size() <= 9) {
    return std::stoll(value) * 1000;
  }
  const time_t when = curl_getdate(value.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  return std::max<long long>(0, (static_cast<long long>(when) - std::time(nullptr)) * 1000);
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
    std::string data = p.contains("data") ? "" : "payload.data: is required";
    return first_error(need_string(p, "tenant_id", 200), need_string(p, "endpoint_id", 200),
                       need_string(p, "event", 200), need_string(p, "event_id", 500), data);
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

    std::string resolve;
    if (auto refused = jobhost_plugins::net::pin_target(url, allow_, "allow_cidrs", resolve)) {
      return Result::permanent("webhook: " + *refused);
    }

    const std::string timestamp = std::to_string(std::time(nullptr));
    const std::string body = nlohmann::json{{"event", p["event"]},
                                            {"event_id", p["event_id"]},
                                            {"created_at", iso_now()},
                                            {"data", p["data"]}}
                                 .dump();
    const std::string signature = hmac_sha256_hex(secret, timestamp + "." + body);

    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) return Result::retry("webhook: curl_easy_init failed");
    curl_slist* headers = nullptr;
    for (const std::string& h : {std::string("Content-Type: application/json"),
                                 "User-Agent: jobhost-webhook/" + std::string(kVersion),
                                 "X-Jobhost-Event: " + p["event"].get<std::string>(),
                                 "X-Jobhost-Event-Id: " + p["event_id"].get<std::string>(),
                                 "X-Jobhost-Timestamp: " + timestamp,
                                 "X-Jobhost-Signature: t=" + timestamp + ",v1=" + signature, std::string("Expect:")}) {
      headers = curl_slist_append(headers, h.c_str());
    }
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers, curl_slist_free_all);
    curl_slist* pins = curl_slist_append(nullptr, resolve.c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> pin_list(pins, curl_slist_free_all);

    Response response;
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_RESOLVE, pins);
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

    const auto started = std::chrono::steady_clock::now();
    const CURLcode rc = curl_easy_perform(c);
    const long ms = static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count());
    const std::string where = "POST " + url + " (" + resolve.substr(resolve.rfind(':') + 1) + ")";
    if (rc != CURLE_OK) {
      if (rc == CURLE_ABORTED_BY_CALLBACK) return Result::retry("webhook: cancelled during " + where);
      return Result::retry("webhook: " + where + " failed after " + std::to_string(ms) + " ms: " +
                           curl_easy_strerror(rc));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    const std::string status = "HTTP " + std::to_string(response.status);
    job.log_info("webhook " + p["event"].get<std::string>() + " " + p["event_id"].get<std::string>() + ": " + where +
                 " -> " + status + " in " + std::to_string(ms) + " ms");
    if (response.status >= 200 && response.status < 300) return Result::ok();
    const std::string message = "webhook: " + where + " answered " + status +
                                (response.body.empty() ? "" : ": " + response.body);
    if (response.status == 408 || response.status == 429 || response.status >= 500) {
      if (const auto delay = retry_after_ms(response.retry_after)) {
        return Result::retry_after(std::chrono::milliseconds(std::min(*delay, max_retry_after_ms_)),
                                   message + " (Retry-After: " + response.retry_after + ")");
      }
      return Result::retry(message);
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

JOBHOST_PLUGIN(WebhookDispatch, "webhook_dispatch", "1.0.0", "webhook.dispatch")
