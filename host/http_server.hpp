// http_server.hpp: the admin API's HTTP/1.1 server. Event-driven (Boost.Beast on
// Boost.Asio): a connection that stalls costs a socket and a timer, not a
// thread, so stalled or slow clients cannot queue the others behind them.
//
// In front of the handlers, on each listener's own I/O thread:
//   - connections bounded in total and per client address (503 / 429, closed);
//   - deadlines for the whole header, the whole body, a response to be taken,
//     and the idle time between keep-alive requests;
//   - the body size limit applied to Content-Length before a byte of the body
//     is read (413), the header size limited too (431);
//   - request rates limited per client address and per API token (429 with
//     Retry-After), before the body is read;
//   - probes (GET /healthz, /readyz) answered on the I/O thread itself, never
//     queued behind handlers and never rate-limited.
// Other routes run on a fixed pool of handler threads (they block on
// PostgreSQL and Redis) with a bounded queue: 503 with Retry-After when full.
//
// Handlers keep cpp-httplib's Request and Response (plain structs), and the
// route methods its names, so that routes read as they did on cpp-httplib.
#pragma once

#include <httplib.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>  // before any Asio header: Boost 1.74's awaitable.hpp needs std::exchange

#include "config.hpp"

namespace jobhost {

class HttpServer {
 public:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  // The name of the API token an Authorization header carries, when it carries
  // a valid one: requests with it are also limited per token.
  using TokenName = std::function<std::optional<std::string>(const std::string& authorization)>;

  HttpServer(const ApiLimits& limits, TokenName token_name);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // pattern: a regex matched against the whole percent-decoded path; its
  // groups are in req.matches. Get also answers HEAD. Register before start().
  void Get(const std::string& pattern, Handler handler);
  void Post(const std::string& pattern, Handler handler);
  // A GET answered on the listener's I/O thread: the handler must not block.
  void Probe(const std::string& path, Handler handler);

  // Binds host:port (port 0 picks a free one) and returns the port. A
  // probes_only listener answers the probes and 404 to everything else.
  // Throws std::runtime_error when the address cannot be bound.
  int listen(const std::string& host, int port, bool probes_only);
  // Starts one I/O thread per listener and the handler threads.
  void start();
  // Closes every connection; a handler still running finishes unanswered.
  void stop();

  struct Impl;  // http_server.cpp's sessions work on it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace jobhost
