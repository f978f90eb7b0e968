// jobhost_plugins/http_client.hpp: the one outbound HTTP client of the plugins
// (import sources, webhook targets), on libcurl, for URLs a tenant gave.
//
// Whatever the caller asks, every request:
//  - resolves the URL's host here and checks every address it has
//    (address_policy.hpp: non-public ones are refused unless allow-listed),
//    then pins the connection to the checked address (CURLOPT_RESOLVE), so DNS
//    cannot answer differently when curl connects;
//  - ignores proxies: http_proxy, https_proxy, ALL_PROXY and the rest are not
//    read (CURLOPT_PROXY "", CURLOPT_NOPROXY "*"). A proxy resolves and
//    connects on its own, to an address nobody checked, so honouring one would
//    route around the guard;
//  - never follows a redirect (its target was never checked): a 3xx is
//    returned as the answer;
//  - speaks http or https only, within a whole-request timeout and a connect
//    timeout (and, when asked, gives up on a server silent for too long);
//  - polls the caller's cancellation flag while it runs.
// A body is either streamed to a callback as it arrives (an import's CSV), or
// kept in memory up to a limit (a webhook's answer).
//
// Thread-safe: a Client is immutable and each send() uses its own handle.
#pragma once

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <jobhost_plugins/address_policy.hpp>
#include <jobhost_plugins/settings.hpp>

namespace jobhost_plugins::http {

struct Limits {
  long timeout_ms = 10000;  // the whole request, body included
  long connect_timeout_ms = 5000;
  long stall_seconds = 0;  // give up when no byte arrived for this long; 0: no such limit
};

struct Request {
  std::string method = "GET";  // "GET" or "POST"
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent with POST
  // Set: each piece of a 2xx answer's body is handed over as it arrives, and
  // none of it is kept; throwing aborts the transfer (Failure::kCallback with
  // the exception's message). Unset, or for any other answer: the body is kept.
  std::function<void(std::string_view)> on_body;
  // Bytes of a body kept in Response::body. Once that many have arrived the
  // transfer ends without reading the rest (Response::truncated): an endless
  // answer cannot hold a worker until the timeout.
  size_t keep_body = 64 * 1024;
  // Polled while the transfer runs; true aborts it (Failure::kCancelled).
  std::function<bool()> cancelled;
};

enum class Failure {
  kNone,        // an answer came: see Response::status, whatever it is
  kRefused,     // the URL, or an address of its host, is refused: no connection was made
  kUnresolved,  // the host name did not resolve (DNS may answer later)
  kTransport,   // connection refused, TLS, timeout, a broken answer: libcurl's message
  kCancelled,   // Request::cancelled said so
  kCallback,    // Request::on_body threw
};

struct Response {
  Failure failure = Failure::kNone;
  std::string error;  // why, when failure is not kNone
  long status = 0;    // the final answer's HTTP status; 0 when none arrived
  std::string body;   // at most Request::keep_body bytes
  bool truncated = false;
  std::string address;  // the address connected to; empty for an IPv6 literal host (nothing to pin)
  long elapsed_ms = 0;  // of the transfer, resolution excluded
  std::vector<std::pair<std::string, std::string>> headers;  // of the final answer; names lower-cased

  // The value of a header of the final answer (name in lower case), or "" when absent.
  std::string header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
      if (name == lower_name) return value;
    }
    return {};
  }
  bool redirect() const { return status >= 300 && status < 400; }
};

class Client {
 public:
  // allow: networks a target may be in although not public; allow_setting
  // names them in refusals ("allow it with the plugin's settings.allow_cidrs").
  Client(std::vector<net::Cidr> allow, std::string allow_setting, Limits limits)
      : allow_(std::move(allow)), allow_setting_(std::move(allow_setting)), limits_(limits) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }

  Response send(const Request& request) const {
    Response response;
    std::string resolve;
    try {
      if (auto refused = net::pin_target(request.url, allow_, allow_setting_.c_str(), resolve)) {
        response.failure = Failure::kRefused;
        response.error = *refused;
        return response;
      }
    } catch (const std::runtime_error& e) {
      response.failure = Failure::kUnresolved;
      response.error = e.what();
      return response;
    }
    // "host:port:address": the address is what follows the second colon.
    if (!resolve.empty()) response.address = resolve.substr(resolve.find(':', resolve.find(':') + 1) + 1);

    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) {
      response.failure = Failure::kTransport;
      response.error = "curl_easy_init failed";
      return response;
    }
    CURL* c = curl.get();
    curl_slist* pins = resolve.empty() ? nullptr : curl_slist_append(nullptr, resolve.c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> pin_list(pins, curl_slist_free_all);
    curl_slist* headers = nullptr;
    for (const auto& h : request.headers) headers = curl_slist_append(headers, h.c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers, curl_slist_free_all);
    Transfer t{&request, &response, c, {}, false};

    curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
    if (pins != nullptr) curl_easy_setopt(c, CURLOPT_RESOLVE, pins);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, limits_.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, limits_.connect_timeout_ms);
    if (limits_.stall_seconds > 0) {
      curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
      curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, limits_.stall_seconds);
    }
    if (request.method == "POST") {
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.c_str());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    } else if (request.method != "GET") {
      response.failure = Failure::kTransport;
      response.error = "unsupported HTTP method " + request.method;
      return response;
    }
    if (headers != nullptr) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    if (request.cancelled) {
      curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
      curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
      curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }

    const auto started = std::chrono::steady_clock::now();
    const CURLcode rc = curl_easy_perform(c);
    response.elapsed_ms = static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started)
            .count());
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
    if (t.callback_error) {
      response.failure = Failure::kCallback;
      response.error = *t.callback_error;
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
      response.failure = Failure::kCancelled;
      response.error = "cancelled";
    } else if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && t.stopped_reading)) {
      response.failure = Failure::kTransport;
      response.error = curl_easy_strerror(rc);
    }
    return response;
  }

 private:
  struct Transfer {
    const Request* request;
    Response* response;
    CURL* curl;
    std::optional<std::string> callback_error;  // what on_body's exception said, if one was thrown
    bool stopped_reading;        // keep_body reached: the write error that follows is ours
  };

  static size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (t->request->on_body && status >= 200 && status < 300) {
      try {
        t->request->on_body(std::string_view(data, len));
      } catch (const std::exception& e) {
        t->callback_error = e.what();
        return 0;  // aborts the transfer
      } catch (...) {
        t->callback_error = "the body callback threw a non-standard exception";
        return 0;
      }
      return len;
    }
    std::string& body = t->response->body;
    const size_t room = t->request->keep_body - std::min(body.size(), t->request->keep_body);
    if (len > room) {
      body.append(data, room);
      t->response->truncated = true;
      t->stopped_reading = true;
      return 0;  // ends the transfer; send() does not count it as a failure
    }
    body.append(data, len);
    return len;
  }

  static size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::string_view line(data, size * n);
    // A status line starts each answer (a 100 Continue may come first): only the last one's headers count.
    if (line.rfind("HTTP/", 0) == 0) {
      t->response->headers.clear();
      return size * n;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return size * n;
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    const std::string_view rest = line.substr(colon + 1);
    const auto first = rest.find_first_not_of(" \t");
    const auto last = rest.find_last_not_of(" \t\r\n");
    t->response->headers.emplace_back(
        std::move(name),
        first == std::string_view::npos ? std::string() : std::string(rest.substr(first, last - first + 1)));
    return size * n;
  }

  static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<const Transfer*>(user)->request->cancelled() ? 1 : 0;  // non-zero aborts
  }

  std::vector<net::Cidr> allow_;
  std::string allow_setting_;
  Limits limits_;
};

// settings.<key>: networks and addresses ("10.0.0.0/8", "fd00::/8",
// "192.0.2.7") a target may be in although not public; refused naming a bad one.
inline std::vector<net::Cidr> allow_list(const SettingsReader& settings, std::string_view key) {
  std::vector<net::Cidr> out;
  for (const auto& item : settings.strings(key)) {
    const auto cidr = net::parse_cidr(item);
    if (!cidr) settings.fail(key, "\"" + item + "\" is not an address or CIDR network");
    out.push_back(*cidr);
  }
  return out;
}

}  // namespace jobhost_plugins::http
