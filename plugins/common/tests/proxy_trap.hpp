// proxy_trap.hpp: for the plugins' own tests, a loopback listener standing in
// for an HTTP proxy, and the proxy variables of the environment pointed at it.
//
// A plugin that honoured the variables would connect to the trap instead of
// the target it checked; the trap counts every connection it accepts and
// answers each with a response of its own, so a test sees both that it was
// used and what it would have smuggled in.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace jobhost_plugins::testing {

class ProxyTrap {
 public:
  // body: what every request through the trap receives, as a 200 answer.
  explicit ProxyTrap(const std::string& body)
      : answer_("HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nConnection: close\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("proxy trap: socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(fd_);
      throw std::runtime_error("proxy trap: cannot listen on 127.0.0.1");
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::jthread([this](std::stop_token stop) { serve(stop); });
  }
  ProxyTrap(const ProxyTrap&) = delete;
  ProxyTrap& operator=(const ProxyTrap&) = delete;
  ~ProxyTrap() {
    thread_.request_stop();
    thread_.join();
    ::close(fd_);
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_.load(); }

 private:
  void serve(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++connections_;
      // The request head (a GET with an absolute URL, or a CONNECT), then the answer.
      std::string head;
      char buf[4096];
      for (int waited = 0; head.find("\r\n\r\n") == std::string::npos && waited < 40; ++waited) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<size_t>(n));
      }
      (void)::send(c, answer_.data(), answer_.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::jthread thread_;
};

// Sets every proxy variable libcurl reads to `proxy_url`, and clears the ones
// that exempt hosts, for the life of the object (then restores them). A
// jobhost started meanwhile inherits them.
class ProxyEnvironment {
 public:
  explicit ProxyEnvironment(const std::string& proxy_url) {
    for (const char* name :
         {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      save(name);
      ::setenv(name, proxy_url.c_str(), 1);
    }
    for (const char* name : {"no_proxy", "NO_PROXY"}) {
      save(name);
      ::unsetenv(name);
    }
  }
  ProxyEnvironment(const ProxyEnvironment&) = delete;
  ProxyEnvironment& operator=(const ProxyEnvironment&) = delete;
  ~ProxyEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        ::setenv(name.c_str(), value->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  void save(const char* name) {
    const char* v = std::getenv(name);
    saved_.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
  }

  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

}  // namespace jobhost_plugins::testing
