// smtp_sink.hpp: a small SMTP server for tests and the demo. It speaks enough
// ESMTP for libcurl (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET,
// NOOP, QUIT), keeps every message it accepts, and can misbehave on purpose:
// refuse a stage of the transaction with a given code, answer slowly, accept a
// message but not say so in time, or stop listening. Loopback only.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <list>
#include <memory>
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

// The reply a refusal replaces: MAIL FROM, RCPT TO, the DATA command (instead
// of 354), or the end of the message (the message is then discarded).
enum class Stage { kMail, kRcpt, kData, kEndOfData };

class Sink {
 public:
  // Listens on 127.0.0.1:port (0 picks a free port). Messages are also written
  // as <n>.eml files under maildir when it is not empty. Throws when the port
  // cannot be bound.
  explicit Sink(uint16_t port = 0, std::filesystem::path maildir = {});
  ~Sink();
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  uint16_t port() const { return port_; }
  // Answer every command of this stage with code (e.g. 554 permanent, 451
  // temporary) instead of accepting it; 0 accepts again. Thread-safe.
  void refuse_with(int code, Stage stage = Stage::kMail);
  // Wait this long before every reply, the greeting included.
  void delay_replies_ms(int ms) { delay_ms_ = ms; }
  // Store the message, then wait this long before the 250 that ends DATA: a
  // relay that took the message but whose answer never reaches the client.
  void delay_end_of_data_ms(int ms) { delay_end_ms_ = ms; }
  std::vector<Message> messages() const;
  // Connections accepted so far.
  int connections() const { return connections_; }
  // Stops listening and drops every connection ("down"); idempotent.
  void stop();

 private:
  struct Client {
    std::thread thread;
    std::atomic<bool> done{false};
    int fd = -1;
  };

  void accept_loop();
  void serve(Client& client);
  void reap_finished();

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::filesystem::path maildir_;
  std::atomic<int> refuse_[4] = {0, 0, 0, 0};
  std::atomic<int> delay_ms_{0};
  std::atomic<int> delay_end_ms_{0};
  std::atomic<int> connections_{0};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<Message> messages_;
  std::list<std::unique_ptr<Client>> clients_;
  std::thread acceptor_;
};

}  // namespace smtp
