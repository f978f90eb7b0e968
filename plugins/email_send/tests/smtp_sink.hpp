// smtp_sink.hpp: a small SMTP server for tests and the demo. It speaks enough
// ESMTP for an SMTP client (EHLO/HELO, PIPELINING, MAIL, RCPT, DATA with
// dot-unstuffing, RSET, NOOP, QUIT), keeps every message it accepts, counts
// connections, and can misbehave on purpose: refuse a stage of the transaction
// with a given code, answer late, accept a message but not say so in time,
// drop the connection or stop answering at a stage, close idle sessions, or
// stop listening. Loopback only.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <cctype>
#include <set>
#include <string>
#include <thread>
#include <vector>

struct ssl_ctx_st;

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
  // Answer RCPT TO of addresses at this domain with code (a mailbox provider
  // deferring us: "421 try later"), the next `times` times; "" stops.
  void refuse_domain(const std::string& domain, int code, int times) {
    std::lock_guard lock(mu_);
    refused_domain_ = domain;
    refused_domain_code_ = code;
    refused_domain_left_ = times;
  }
  // Answer RCPT TO of this address (case-insensitively) with "550 5.1.1 ...
  // User unknown", as a relay does for a mailbox that does not exist. Thread-safe.
  void unknown_user(const std::string& address) {
    std::lock_guard lock(mu_);
    std::string a = address;
    for (char& c : a) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    unknown_users_.insert(a);
  }
  // RCPT TO answered by refuse_domain so far.
  int domain_refusals() const {
    std::lock_guard lock(mu_);
    return domain_refusals_;
  }
  // Send every reply this long after its command arrived (the greeting: after
  // the connection), like a relay this far away: commands that arrive
  // together (pipelined) are answered together, one delay for the group.
  void delay_replies_ms(int ms) { delay_ms_ = ms; }
  // Close the connection instead of answering this stage, `times` times (-1:
  // always; 0: never again). At kEndOfData the message is stored first: a
  // relay that took it and then lost the connection.
  void drop_at(Stage stage, int times = -1) { drop_[static_cast<int>(stage)] = times; }
  // Stop answering (and reading) at this stage, keeping the connection open,
  // `times` times: a relay that hangs mid-pipeline.
  void stall_at(Stage stage, int times = -1) { stall_[static_cast<int>(stage)] = times; }
  // Close a connection that sent no command for this long, after saying
  // "421 idle timeout" when with_421 (0: never).
  void close_idle_after_ms(int ms, bool with_421 = true) {
    idle_close_ms_ = ms;
    idle_421_ = with_421;
  }
  // Speak TLS with this certificate chain and key (PEM files): offered as
  // STARTTLS, or from the first byte when implicit (smtps). Call before the
  // first connection. Throws when the files cannot be loaded.
  void enable_tls(const std::string& cert_file, const std::string& key_file, bool implicit);
  // Sessions that completed a TLS handshake.
  int tls_sessions() const { return tls_sessions_; }
  // Leave PIPELINING out of the EHLO reply.
  void advertise_pipelining(bool yes) { pipelining_ = yes; }
  // Store the message, then wait this long before the 250 that ends DATA: a
  // relay that took the message but whose answer never reaches the client.
  void delay_end_of_data_ms(int ms) { delay_end_ms_ = ms; }
  std::vector<Message> messages() const;
  // Messages accepted so far (kept or not).
  size_t received() const {
    std::lock_guard lock(mu_);
    return received_;
  }
  // Keep no message in memory, only count them (the benchmark's sink).
  void keep_messages(bool yes) { keep_ = yes; }
  // Connections accepted so far, and the most open at once.
  int connections() const { return connections_; }
  int peak_connections() const { return peak_; }
  // Transactions begun (MAIL FROM accepted), for counting reuse.
  int transactions() const { return transactions_; }
  // MAIL FROM commands received, refused ones included.
  int mail_commands() const { return mail_commands_; }
  // MAIL FROM commands that arrived together with their RCPT and DATA.
  int pipelined() const { return pipelined_; }
  // Writes of replies: the replies to a pipelined group leave in one.
  int reply_writes() const { return reply_writes_; }
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
  std::atomic<int> open_{0};
  std::atomic<int> peak_{0};
  std::atomic<int> transactions_{0};
  std::atomic<int> mail_commands_{0};
  std::atomic<int> pipelined_{0};
  std::atomic<int> reply_writes_{0};
  std::atomic<int> drop_[4] = {0, 0, 0, 0};
  std::atomic<int> stall_[4] = {0, 0, 0, 0};
  std::atomic<int> idle_close_ms_{0};
  std::atomic<bool> idle_421_{true};
  std::atomic<bool> pipelining_{true};
  std::atomic<bool> keep_{true};
  ssl_ctx_st* tls_ctx_ = nullptr;
  bool tls_implicit_ = false;
  std::atomic<int> tls_sessions_{0};
  size_t received_ = 0;  // under mu_
  std::set<std::string> unknown_users_;  // under mu_, lower case
  std::string refused_domain_;  // under mu_, with the three below
  int refused_domain_code_ = 0;
  int refused_domain_left_ = 0;
  int domain_refusals_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<Message> messages_;
  std::list<std::unique_ptr<Client>> clients_;
  std::thread acceptor_;
};

}  // namespace smtp
