// http_server.cpp: sessions on Beast's tcp_stream, whose deadline covers a whole
// operation (a header trickled a byte at a time still ends at the deadline).
// Each listener has one io_context run by one thread, so a session's state is
// only touched there; handlers run on the pool and post their answer back.
#include "http_server.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "metrics.hpp"
#include "rate_limiter.hpp"

namespace jobhost {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

constexpr size_t kMaxHeaderBytes = 16 * 1024;
// Longer paths are refused before the routes' regexes (recursive in
// libstdc++) see them.
constexpr size_t kMaxTargetBytes = 4096;
// Descriptors kept for the rest of the host (PostgreSQL, Redis, plugins, files).
constexpr rlim_t kReservedFds = 256;
// After an error answer, what the client was still sending is read and
// dropped for this long, so that the close does not reset the answer away.
constexpr milliseconds kLinger{1000};
constexpr size_t kMaxDrainBytes = 16 << 20;
constexpr auto kLogEvery = std::chrono::seconds(10);

std::string error_json(const std::string& message) {
  return nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // cut short
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and beyond U+10FFFF.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoded (a malformed escape stays as written, as cpp-httplib did); in a
// query, '+' is a space.
std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += plus_is_space && s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// Thrown while a request is looked at: the answer is status and message.
struct Refusal {
  int status;
  std::string message;
  long retry_after = 0;
};

void parse_target(std::string_view target, httplib::Request& req) {
  if (target.empty() || target.front() != '/') throw Refusal{400, "the request target must be a path (/...)"};
  if (target.size() > kMaxTargetBytes) {
    throw Refusal{414, "the request target is longer than " + std::to_string(kMaxTargetBytes) + " bytes"};
  }
  const size_t q = target.find('?');
  req.target = std::string(target);
  req.path = percent_decode(target.substr(0, q), false);
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    while (!query.empty()) {
      const size_t amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      if (!pair.empty()) {
        const size_t eq = pair.find('=');
        req.params.emplace(percent_decode(pair.substr(0, eq), true),
                           eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1), true));
      }
      if (amp == std::string_view::npos) break;
      query.remove_prefix(amp + 1);
    }
  }
  bool ok = valid_utf8(req.path) && req.path.find('\0') == std::string::npos;
  for (const auto& [k, v] : req.params) ok = ok && valid_utf8(k) && valid_utf8(v);
  if (!ok) throw Refusal{400, "the request target is not valid UTF-8 once percent-decoded"};
}

// A fixed set of threads with a bounded queue.
class HandlerPool {
 public:
  void start(int threads, size_t max_queued) {
    max_ = max_queued;
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  bool try_post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      if (stopping_ || queue_.size() >= max_) return false;
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
    return true;
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    std::lock_guard lock(mu_);
    queue_.clear();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  size_t max_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

struct Route {
  std::string method;
  std::regex pattern;
  HttpServer::Handler handler;
  bool probe = false;
};

}  // namespace

// One bound address. The accounting is declared before the io_context so that
// it outlives the sessions the io_context still owns when it is destroyed.
struct Listener {
  std::mutex mu;
  int open = 0;
  std::unordered_map<std::string, int> per_client;
  long refused_since_log = 0;
  std::chrono::steady_clock::time_point last_log{};

  bool probes_only = false;
  int max_connections = 0;
  std::string name;                  // "api" or "api health", for logs and metrics
  std::array<char, 4096> discard{};  // lingering reads land here (one I/O thread)

  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer retry{io};
  std::thread thread;
};

struct HttpServer::Impl {
  Impl(const ApiLimits& l, TokenName t)
      : limits(l),
        token_name(std::move(t)),
        by_client(l.client_per_s, l.client_burst),
        by_token(l.token_per_s, l.token_burst) {}
  ~Impl() { stop(); }

  void accept(Listener& l);
  void admitted(Listener& l, tcp::socket socket, const std::string& client);
  void release(Listener& l, const std::string& client);
  void refuse(Listener& l, tcp::socket& socket, int status, const std::string& message, const char* reason);
  void stop() {
    for (auto& l : listeners) {
      l->io.stop();
      if (l->thread.joinable()) l->thread.join();
      // Refused from now on rather than left waiting in the backlog.
      beast::error_code ignored;
      l->acceptor.close(ignored);
    }
    pool.stop();
  }

  ApiLimits limits;
  TokenName token_name;
  std::vector<Route> routes;
  RateLimiter by_client, by_token;
  HandlerPool pool;
  std::vector<std::unique_ptr<Listener>> listeners;
};

namespace {

using Impl = HttpServer::Impl;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& server, Listener& listener, tcp::socket socket, std::string client)
      : server_(server), listener_(listener), stream_(std::move(socket)), client_(std::move(client)) {}
  ~Session() { server_.release(listener_, client_); }

  void start() { read_header(milliseconds(server_.limits.header_timeout_ms)); }

 private:
  void read_header(milliseconds deadline) {
    parser_.emplace();
    parser_->header_limit(kMaxHeaderBytes);
    parser_->body_limit(static_cast<uint64_t>(server_.limits.max_body_bytes));
    stream_.expires_after(deadline);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == asio::error::eof) {
      return;  // gone, or silent past the deadline: nothing to answer
    }
    if (ec == http::error::body_limit) return refuse_request({413, body_limit_message()});
    if (ec == http::error::header_limit) {
      return refuse_request(
          {431, "the request header is larger than " + std::to_string(kMaxHeaderBytes) + " bytes"});
    }
    if (ec) return refuse_request({400, "malformed HTTP request: " + ec.message()});
    try {
      admit(parser_->get());
    } catch (const Refusal& r) {
      return refuse_request(r);
    }
    if (parser_->is_done()) return dispatch();
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      continue_ = std::make_shared<http::response<http::empty_body>>(http::status::continue_, 11);
      http::async_write(stream_, *continue_, [self = shared_from_this()](beast::error_code e, size_t) {
        if (!e) self->read_body();
      });
      return;
    }
    read_body();
  }

  std::string body_limit_message() const {
    return "the request body is larger than " + std::to_string(server_.limits.max_body_bytes) +
           " bytes (api.max_body_bytes)";
  }

  // Everything decided from the header alone: the target, the route, the rate.
  void admit(const http::request<http::string_body>& h) {
    if (h.version() != 10 && h.version() != 11) throw Refusal{505, "only HTTP/1.0 and HTTP/1.1 are served"};
    req_ = std::make_shared<httplib::Request>();
    httplib::Request& req = *req_;
    req.method = std::string(h.method_string());
    req.version = h.version() == 10 ? "HTTP/1.0" : "HTTP/1.1";
    req.remote_addr = client_;
    parse_target(std::string_view(h.target().data(), h.target().size()), req);
    for (const auto& field : h)
      req.headers.emplace(std::string(field.name_string()), std::string(field.value()));
    route_ = find_route(req);
    head_ = req.method == "HEAD";
    keep_alive_ = h.keep_alive();
    if (route_ != nullptr && route_->probe) return;
    if (const long wait = server_.by_client.take(client_)) {
      Metrics::global().inc("api_refused_total", {{"reason", "rate_per_client"}});
      throw Refusal{429,
                    "more than " + rate_text(server_.limits.client_per_s) + " requests/s from " + client_ +
                        " (api.rate_limit.per_client); retry after " + std::to_string(wait) + " s",
                    wait};
    }
    const auto auth = h.find(http::field::authorization);
    if (auth == h.end() || !server_.token_name) return;
    if (const auto name = server_.token_name(std::string(auth->value()))) {
      if (const long wait = server_.by_token.take(*name)) {
        Metrics::global().inc("api_refused_total", {{"reason", "rate_per_token"}});
        throw Refusal{429,
                      "more than " + rate_text(server_.limits.token_per_s) + " requests/s with " + *name +
                          " (api.rate_limit.per_token); retry after " + std::to_string(wait) + " s",
                      wait};
      }
    }
  }

  static std::string rate_text(double per_s) {
    std::string s = std::to_string(per_s);
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
  }

  const Route* find_route(httplib::Request& req) const {
    const std::string& method = req.method == "HEAD" ? std::string("GET") : req.method;
    for (const Route& r : server_.routes) {
      if (r.method != method || (listener_.probes_only && !r.probe)) continue;
      if (std::regex_match(req.path, req.matches, r.pattern)) return &r;
    }
    return nullptr;
  }

  void read_body() {
    stream_.expires_after(milliseconds(server_.limits.body_timeout_ms));
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec == http::error::body_limit) return self->refuse_request({413, self->body_limit_message()});
      if (ec == http::error::partial_message) {
        return self->refuse_request({400, "the request ended before its body was complete"});
      }
      if (ec == beast::error::timeout) {
        Metrics::global().inc("api_refused_total", {{"reason", "body_timeout"}});
        return;  // the stream closed itself at the deadline
      }
      if (ec == asio::error::connection_reset || ec == asio::error::operation_aborted) return;
      if (ec) return self->refuse_request({400, "malformed HTTP request body: " + ec.message()});
      self->dispatch();
    });
  }

  void dispatch() {
    req_->body = std::move(parser_->get().body());
    if (route_ == nullptr) {
      return refuse_request({404, "no route " + req_->method + " " + req_->path}, /*close=*/false);
    }
    if (route_->probe) {
      httplib::Response res;
      run(*route_, *req_, res);
      return respond(std::move(res));
    }
    // The pool's copy of self is handed on to the answer, so that the session
    // is only ever released on its I/O thread.
    auto task = [self = shared_from_this(), route = route_, req = req_]() mutable {
      auto res = std::make_shared<httplib::Response>();
      run(*route, *req, *res);
      auto executor = self->stream_.get_executor();
      asio::post(executor, [self = std::move(self), res] { self->respond(std::move(*res)); });
    };
    if (!server_.pool.try_post(std::move(task))) {
      Metrics::global().inc("api_refused_total", {{"reason", "busy"}});
      refuse_request({503,
                      "every API handler thread is busy and " + std::to_string(server_.limits.queue) +
                          " requests wait (api.threads, api.queue); retry shortly",
                      1},
                     /*close=*/false);
    }
  }

  static void run(const Route& route, const httplib::Request& req, httplib::Response& res) {
    try {
      route.handler(req, res);
    } catch (const std::exception& e) {
      spdlog::error("api {} {}: {}", req.method, req.path, e.what());
      res = httplib::Response{};
      res.status = 500;
      res.set_content(error_json(e.what()), "application/json");
    } catch (...) {
      res = httplib::Response{};
      res.status = 500;
      res.set_content(error_json("unknown error"), "application/json");
    }
  }

  // An answer the server gives itself. The connection is closed after it
  // unless the request was read whole and close is false.
  void refuse_request(const Refusal& r, bool close = true) {
    httplib::Response res;
    res.status = r.status;
    res.set_content(error_json(r.message), "application/json");
    if (r.retry_after > 0) res.set_header("Retry-After", std::to_string(r.retry_after));
    if (close || !parser_ || !parser_->is_done()) keep_alive_ = false;
    respond(std::move(res));
  }

  void respond(httplib::Response res) {
    auto msg = std::make_shared<http::response<http::string_body>>();
    msg->version(req_ && req_->version == "HTTP/1.0" ? 10 : 11);
    // A handler that sets no status means 200, as in cpp-httplib.
    msg->result(static_cast<unsigned>(res.status > 0 ? res.status : 200));
    for (const auto& [name, value] : res.headers) msg->insert(name, value);
    const size_t length = res.body.size();
    if (!head_) msg->body() = std::move(res.body);
    msg->keep_alive(keep_alive_);
    msg->content_length(length);
    response_ = msg;
    stream_.expires_after(milliseconds(server_.limits.body_timeout_ms));
    http::async_write(stream_, *msg, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->response_.reset();
      if (ec) return;
      if (!self->keep_alive_) return self->linger();
      self->req_.reset();
      self->route_ = nullptr;
      self->head_ = false;
      self->read_header(milliseconds(self->server_.limits.idle_timeout_ms));
    });
  }

  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(kLinger);
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(listener_.discard),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (!ec && self->drained_ < kMaxDrainBytes) self->drain();
                            });
  }

  Impl& server_;
  Listener& listener_;
  beast::tcp_stream stream_;
  std::string client_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<httplib::Request> req_;
  const Route* route_ = nullptr;
  bool head_ = false;
  bool keep_alive_ = true;
  size_t drained_ = 0;
  std::shared_ptr<http::response<http::string_body>> response_;
  std::shared_ptr<http::response<http::empty_body>> continue_;
};

std::string client_of(const tcp::socket& socket) {
  beast::error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return "unknown";
  const asio::ip::address a = peer.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  }
  return a.to_string();
}

}  // namespace

void Impl::accept(Listener& l) {
  l.acceptor.async_accept([this, &l](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, most likely: wait rather than spin.
      spdlog::warn("{}: accept failed: {}", l.name, ec.message());
      l.retry.expires_after(milliseconds(100));
      l.retry.async_wait([this, &l](beast::error_code e) {
        if (!e) accept(l);
      });
      return;
    }
    const std::string client = client_of(socket);
    admitted(l, std::move(socket), client);
    accept(l);
  });
}

void Impl::admitted(Listener& l, tcp::socket socket, const std::string& client) {
  {
    std::lock_guard lock(l.mu);
    if (l.open >= l.max_connections) {
      refuse(l, socket, 503,
             l.name + " has " + std::to_string(l.open) + " connections open, its limit (api.max_connections)",
             "max_connections");
      return;
    }
    int& mine = l.per_client[client];
    if (mine >= limits.max_connections_per_client) {
      refuse(l, socket, 429,
             client + " has " + std::to_string(mine) +
                 " connections open, its limit (api.max_connections_per_client)",
             "max_connections_per_client");
      return;
    }
    ++mine;
    ++l.open;
    Metrics::global().set("api_connections", {{"listener", l.name}}, l.open);
  }
  std::make_shared<Session>(*this, l, std::move(socket), client)->start();
}

void Impl::release(Listener& l, const std::string& client) {
  std::lock_guard lock(l.mu);
  --l.open;
  if (const auto it = l.per_client.find(client); it != l.per_client.end() && --it->second <= 0) {
    l.per_client.erase(it);
  }
  Metrics::global().set("api_connections", {{"listener", l.name}}, l.open);
}

// Called with l.mu held. One write that must not block, then close: a refused
// connection costs no more than its accept.
void Impl::refuse(Listener& l, tcp::socket& socket, int status, const std::string& message,
                  const char* reason) {
  const std::string body = error_json(message);
  const std::string text = "HTTP/1.1 " + std::to_string(status) +
                           (status == 429 ? " Too Many Requests" : " Service Unavailable") +
                           "\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
                           "Content-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body;
  beast::error_code ignored;
  socket.non_blocking(true, ignored);
  socket.write_some(asio::buffer(text), ignored);
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
  Metrics::global().inc("api_refused_total", {{"reason", reason}});
  ++l.refused_since_log;
  const auto now = std::chrono::steady_clock::now();
  if (now - l.last_log >= kLogEvery) {
    spdlog::warn("{}: refused {} connection(s) since the last report; latest: {}", l.name,
                 l.refused_since_log, message);
    l.refused_since_log = 0;
    l.last_log = now;
  }
}

HttpServer::HttpServer(const ApiLimits& limits, TokenName token_name)
    : impl_(std::make_unique<Impl>(limits, std::move(token_name))) {}

HttpServer::~HttpServer() = default;

void HttpServer::Get(const std::string& pattern, Handler handler) {
  impl_->routes.push_back({"GET", std::regex(pattern), std::move(handler), false});
}

void HttpServer::Post(const std::string& pattern, Handler handler) {
  impl_->routes.push_back({"POST", std::regex(pattern), std::move(handler), false});
}

void HttpServer::Probe(const std::string& path, Handler handler) {
  // Probes first, so that no pattern of the API shadows them.
  impl_->routes.insert(
      impl_->routes.begin(),
      Route{"GET", std::regex(std::regex_replace(path, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)")),
            std::move(handler), true});
}

int HttpServer::listen(const std::string& host, int port, bool probes_only) {
  auto l = std::make_unique<Listener>();
  l->probes_only = probes_only;
  l->name = probes_only ? "api health" : "api";
  beast::error_code ec;
  tcp::resolver resolver(l->io);
  const auto found = resolver.resolve(host, std::to_string(port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || found.empty()) throw std::runtime_error("cannot resolve " + host + ": " + ec.message());
  const tcp::endpoint endpoint = found.begin()->endpoint();
  l->acceptor.open(endpoint.protocol(), ec);
  if (!ec) l->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) l->acceptor.bind(endpoint, ec);
  if (!ec) l->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  const int bound = l->acceptor.local_endpoint().port();
  impl_->listeners.push_back(std::move(l));
  return bound;
}

void HttpServer::start() {
  // Every listener's connections must fit in the descriptors left to the host.
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  const auto listeners = static_cast<rlim_t>(std::max<size_t>(1, impl_->listeners.size()));
  const rlim_t budget =
      nofile.rlim_cur > kReservedFds * 2 ? (nofile.rlim_cur - kReservedFds) / listeners : 16;
  for (auto& l : impl_->listeners) {
    l->max_connections = impl_->limits.max_connections;
    if (static_cast<rlim_t>(l->max_connections) > budget) {
      l->max_connections = static_cast<int>(budget);
      spdlog::warn(
          "{}: api.max_connections lowered from {} to {} to fit the open-file limit ({}); raise it "
          "(ulimit -n, LimitNOFILE=) to allow more",
          l->name, impl_->limits.max_connections, l->max_connections, nofile.rlim_cur);
    }
  }
  impl_->pool.start(impl_->limits.threads, static_cast<size_t>(impl_->limits.queue));
  for (auto& l : impl_->listeners) {
    impl_->accept(*l);
    l->thread = std::thread([&io = l->io] { io.run(); });
  }
}

void HttpServer::stop() { impl_->stop(); }

}  // namespace jobhost
