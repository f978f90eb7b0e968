// smtp_session.hpp: one open SMTP client session to a relay (TCP, plain,
// STARTTLS or implicit TLS over OpenSSL, AUTH PLAIN/LOGIN), which sends one
// message at a time and can then send the next: what libcurl cannot give us
// (it neither pipelines SMTP commands nor lets us RSET and health-check a
// kept connection; see the README's "Sending mail").
//
// Not thread-safe: a session is used by one worker at a time (SessionPool
// lends it out). Every call is bounded by the endpoint's timeout_ms.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "smtp_protocol.hpp"

namespace smtp_client {

using Clock = std::chrono::steady_clock;

struct Endpoint {
  std::string host;
  uint16_t port = 25;
  bool implicit_tls = false;  // smtps://
  bool require_tls = false;   // STARTTLS must succeed (credentials are set)
  std::string username, password;
  std::string helo = "localhost";
  long timeout_ms = 30000;
  std::string ca_file;        // trust this PEM bundle instead of the system's (tests, private CAs)
  bool use_pipelining = true; // when the relay advertises PIPELINING
};

// What one relay did with one message.
enum class Outcome {
  kSent,               // 250 after the end of the message
  kNotTaken,           // known not to have the message: refused, or the body never fully went out
  kRecipientRejected,  // RCPT answered 5xx
  kUnknown,            // the whole message went out and no answer came back
};

struct Delivery {
  Outcome outcome = Outcome::kNotTaken;
  std::string error;     // for kNotTaken / kRecipientRejected / kUnknown: what happened, the relay's words quoted
  Reply refusal;         // the relay's 4xx/5xx reply, when it gave one (code 0 otherwise)
  bool reusable = false; // the session may carry the next message
  bool stale = false;    // a kept session that turned out closed before any reply: nothing was handed over
};

// Session::open failed; reply is the relay's refusal (code 0 when it did not
// get that far: unreachable, timed out, TLS).
struct OpenError : std::runtime_error {
  OpenError(const std::string& what, Reply r = {}) : std::runtime_error(what), reply(std::move(r)) {}
  Reply reply;
};

class Session {
 public:
  // Connects, reads the greeting, EHLO, STARTTLS when needed, EHLO again,
  // AUTH. Throws OpenError saying which step failed and why (a
  // refusal quotes the relay's reply; the password never appears).
  static std::unique_ptr<Session> open(const Endpoint& endpoint);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // One transaction: MAIL FROM, RCPT TO, DATA, the message (dot-stuffing is
  // done here), pipelined when the relay advertises PIPELINING (preceded by
  // RSET on a kept session, in the same round trip). abort() is polled while
  // waiting; it stops the transaction only while the relay cannot have the
  // whole message yet.
  Delivery send(const std::string& from, const std::string& to, const std::string& message,
                const std::function<bool()>& abort);

  // Checkout health check without a round trip: false when the relay closed
  // the session or said something unasked (a 421 before closing).
  bool idle_ok();
  // RSET and wait for 250: a round trip. False when the session is unusable.
  bool reset();
  // QUIT without waiting for the answer, then close.
  void quit();

  bool pipelining() const { return caps_.pipelining; }
  bool tls() const;
  int messages() const { return messages_; }
  Clock::time_point last_used() const { return last_used_; }

 private:
  struct Io;
  explicit Session(const Endpoint& endpoint);

  Endpoint endpoint_;
  std::unique_ptr<Io> io_;
  Capabilities caps_;
  int messages_ = 0;
  bool dirty_ = false;  // a transaction began since the last RSET or completed message
  Clock::time_point last_used_ = Clock::now();
};

}  // namespace smtp_client
