// smtp_sink.hpp: a small SMTP server for tests and the demo. It speaks enough
// ESMTP for libcurl (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET,
// NOOP, QUIT), keeps every message it accepts, and can misbehave on purpose:
// refuse mail with a given code, or answer slowly. Loopback only.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace smtp {

struct Message {
  std::string from;
  std::vector<std::string> to;
  std::string data;  // as received, dot-unstuffed, CRLF line ends
};

class Sink {
 public:
  // Listens on 127.0.0.1:port (0 picks a free port). Messages are also written
  // as <n>.eml files under maildir when it is not empty.
  explicit Sink(uint16_t port = 0, std::filesystem::path maildir = {});
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  uint16_t port() const { return port_; }
  // Answer MAIL FROM with this code (e.g. 554 or 451) instead of 250; 0 accepts.
  void refuse_with(int code) { refuse_code_ = code; }
  // Wait this long before every reply, the greeting included.
  void delay_replies_ms(int ms) { delay_ms_ = ms; }
  std::vector<Message> messages() const;
  // Connections accepted so far.
  int connections() const { return connections_; }
  void stop();

 private:
  void accept_loop();
  void serve(int fd);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::filesystem::path maildir_;
  std::atomic<int> refuse_code_{0};
  std::atomic<int> delay_ms_{0};
  std::atomic<int> connections_{0};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<Message> messages_;
  std::vector<int> clients_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

}  // namespace smtp
