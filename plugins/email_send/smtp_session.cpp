// smtp_session.cpp: the SMTP session (see smtp_session.hpp). Sockets are
// non-blocking and every wait is a poll() bounded by the endpoint's deadline,
// in slices of 50 ms so that abort() is noticed.
#include "smtp_session.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

namespace smtp_client {
namespace {

std::string ssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

std::string base64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

enum class IoStatus { kOk, kClosed, kTimeout, kAborted, kError };

}  // namespace

// The byte stream under a session: a socket, with TLS on it once started.
struct Session::Io {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  std::string in;  // received, not yet parsed
  std::string error;

  ~Io() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
    if (fd >= 0) close(fd);
  }

  // Waits until fd is ready for `events`; kOk, kTimeout or kAborted.
  IoStatus wait(short events, Clock::time_point deadline, const std::function<bool()>& abort) {
    for (;;) {
      if (abort && abort()) return IoStatus::kAborted;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return IoStatus::kTimeout;
      pollfd p{fd, events, 0};
      const int r = poll(&p, 1, static_cast<int>(std::min<long long>(left, 50)));
      if (r > 0) return IoStatus::kOk;
      if (r < 0 && errno != EINTR) {
        error = std::string("poll: ") + std::strerror(errno);
        return IoStatus::kError;
      }
    }
  }

  IoStatus connect_to(const std::string& host, uint16_t port, Clock::time_point deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0) {
      error = "cannot resolve " + host + ": " + gai_strerror(rc);
      return IoStatus::kError;
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
    error = "no address for " + host;
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      const int s = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (s < 0) continue;
      if (::connect(s, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
        error = "connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
        close(s);
        continue;
      }
      fd = s;
      const IoStatus w = wait(POLLOUT, deadline, {});
      int err = 0;
      socklen_t len = sizeof err;
      if (w == IoStatus::kOk && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return IoStatus::kOk;
      }
      error = "connect to " + host + ":" + std::to_string(port) + ": " +
              (w == IoStatus::kTimeout ? "timed out" : std::strerror(err != 0 ? err : errno));
      close(fd);
      fd = -1;
      if (w == IoStatus::kTimeout) return IoStatus::kTimeout;
    }
    return IoStatus::kError;
  }

  IoStatus start_tls(const std::string& host, const std::string& ca_file, Clock::time_point deadline) {
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return fail_tls();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if ((ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx) : SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr)) != 1) {
      return fail_tls();
    }
    ssl = SSL_new(ctx);
    if (ssl == nullptr) return fail_tls();
    SSL_set_fd(ssl, fd);
    in6_addr ip6{};
    in_addr ip4{};
    const bool is_ip = inet_pton(AF_INET, host.c_str(), &ip4) == 1 || inet_pton(AF_INET6, host.c_str(), &ip6) == 1;
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl, host.c_str());
      SSL_set1_host(ssl, host.c_str());
    }
    for (;;) {
      const int r = SSL_connect(ssl);
      if (r == 1) return IoStatus::kOk;
      const int e = SSL_get_error(ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        const long verify = SSL_get_verify_result(ssl);
        error = "TLS handshake with " + host + ": " +
                (verify != X509_V_OK ? std::string(X509_verify_cert_error_string(verify)) : ssl_error());
        return IoStatus::kError;
      }
      if (const IoStatus w = wait(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, {}); w != IoStatus::kOk) {
        error = "TLS handshake with " + host + ": timed out";
        return w;
      }
    }
  }

  IoStatus fail_tls() {
    error = ssl_error();
    return IoStatus::kError;
  }

  IoStatus write_all(std::string_view data, Clock::time_point deadline, const std::function<bool()>& abort) {
    while (!data.empty()) {
      ssize_t n = 0;
      short want = POLLOUT;
      if (ssl != nullptr) {
        size_t written = 0;
        const int r = SSL_write_ex(ssl, data.data(), data.size(), &written);
        if (r == 1) {
          n = static_cast<ssize_t>(written);
        } else {
          const int e = SSL_get_error(ssl, r);
          if (e == SSL_ERROR_WANT_READ) want = POLLIN;
          else if (e != SSL_ERROR_WANT_WRITE) {
            error = "write: " + ssl_error();
            return IoStatus::kClosed;
          }
        }
      } else {
        n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          error = std::string("write: ") + std::strerror(errno);
          return IoStatus::kClosed;
        }
      }
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (const IoStatus w = wait(want, deadline, abort); w != IoStatus::kOk) return w;
    }
    return IoStatus::kOk;
  }

  // Reads more bytes into `in`.
  IoStatus fill(Clock::time_point deadline, const std::function<bool()>& abort) {
    char buf[16384];
    for (;;) {
      short want = POLLIN;
      if (ssl != nullptr) {
        size_t got = 0;
        const int r = SSL_read_ex(ssl, buf, sizeof buf, &got);
        if (r == 1) {
          in.append(buf, got);
          return IoStatus::kOk;
        }
        const int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) return IoStatus::kClosed;
        if (e == SSL_ERROR_WANT_WRITE) want = POLLOUT;
        else if (e != SSL_ERROR_WANT_READ) {
          error = "read: " + ssl_error();
          return IoStatus::kClosed;
        }
      } else {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
          in.append(buf, static_cast<size_t>(n));
          return IoStatus::kOk;
        }
        if (n == 0) return IoStatus::kClosed;
        if (errno != EAGAIN && errno != EINTR) {
          error = std::string("read: ") + std::strerror(errno);
          return IoStatus::kClosed;
        }
      }
      if (const IoStatus w = wait(want, deadline, abort); w != IoStatus::kOk) return w;
    }
  }

  // One reply; `all` gets every line of it when not null (EHLO).
  IoStatus read_reply(Reply& out, Clock::time_point deadline, const std::function<bool()>& abort,
                      std::string* all = nullptr) {
    out = Reply{};
    for (;;) {
      size_t used = 0;
      try {
        used = parse_reply(in, out);
      } catch (const ProtocolError& e) {
        error = e.what();
        return IoStatus::kError;
      }
      if (used > 0) {
        if (all != nullptr) *all = in.substr(0, used);
        in.erase(0, used);
        return IoStatus::kOk;
      }
      out = Reply{};
      if (const IoStatus s = fill(deadline, abort); s != IoStatus::kOk) return s;
    }
  }
};

namespace {

std::string describe(IoStatus s, const std::string& what, const std::string& io_error) {
  switch (s) {
    case IoStatus::kClosed: return "connection closed " + what + (io_error.empty() ? "" : " (" + io_error + ")");
    case IoStatus::kTimeout: return "timed out " + what;
    case IoStatus::kAborted: return "cancelled";
    default: return io_error.empty() ? "error " + what : io_error + " " + what;
  }
}

}  // namespace

Session::Session(const Endpoint& endpoint) : endpoint_(endpoint), io_(std::make_unique<Io>()) {}
Session::~Session() = default;

bool Session::tls() const { return io_->ssl != nullptr; }

std::unique_ptr<Session> Session::open(const Endpoint& ep) {
  static std::once_flag once;
  std::call_once(once, [] { OPENSSL_init_ssl(0, nullptr); });
  std::unique_ptr<Session> s(new Session(ep));
  Io& io = *s->io_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(ep.timeout_ms);
  const std::string where = ep.host + ":" + std::to_string(ep.port);
  const auto fail = [&](IoStatus st, const std::string& what) {
    throw OpenError(describe(st, what, io.error));
  };
  if (const IoStatus st = io.connect_to(ep.host, ep.port, deadline); st != IoStatus::kOk) {
    throw OpenError(io.error);
  }
  if (ep.implicit_tls) {
    if (const IoStatus st = io.start_tls(ep.host, ep.ca_file, deadline); st != IoStatus::kOk) throw OpenError(io.error);
  }
  Reply r;
  if (const IoStatus st = io.read_reply(r, deadline, {}); st != IoStatus::kOk) fail(st, "waiting for the greeting of " + where);
  if (r.code != 220) throw OpenError("greeting refused: \"" + r.line + "\"", r);

  const auto ehlo = [&] {
    std::string all;
    if (const IoStatus st = io.write_all("EHLO " + ep.helo + "\r\n", deadline, {}); st != IoStatus::kOk) fail(st, "sending EHLO");
    if (const IoStatus st = io.read_reply(r, deadline, {}, &all); st != IoStatus::kOk) fail(st, "after EHLO");
    if (r.code != 250) throw OpenError("EHLO refused: \"" + r.line + "\"", r);
    s->caps_ = parse_ehlo(all);
  };
  ehlo();
  if (!ep.implicit_tls && (s->caps_.starttls || ep.require_tls)) {
    if (!s->caps_.starttls) throw OpenError("the relay does not offer STARTTLS, and credentials go over TLS only");
    if (const IoStatus st = io.write_all("STARTTLS\r\n", deadline, {}); st != IoStatus::kOk) fail(st, "sending STARTTLS");
    if (const IoStatus st = io.read_reply(r, deadline, {}); st != IoStatus::kOk) fail(st, "after STARTTLS");
    if (r.code != 220) throw OpenError("STARTTLS refused: \"" + r.line + "\"", r);
    if (!io.in.empty()) throw OpenError("the relay sent data after its STARTTLS reply (refusing a possible injection)");
    if (const IoStatus st = io.start_tls(ep.host, ep.ca_file, deadline); st != IoStatus::kOk) throw OpenError(io.error);
    ehlo();
  }
  if (!ep.username.empty()) {
    if (s->caps_.auth_plain) {
      const std::string token = base64(std::string(1, '\0') + ep.username + std::string(1, '\0') + ep.password);
      if (const IoStatus st = io.write_all("AUTH PLAIN " + token + "\r\n", deadline, {}); st != IoStatus::kOk) fail(st, "sending AUTH");
      if (const IoStatus st = io.read_reply(r, deadline, {}); st != IoStatus::kOk) fail(st, "after AUTH");
    } else if (s->caps_.auth_login) {
      for (const std::string* part : {static_cast<const std::string*>(nullptr), &ep.username, &ep.password}) {
        const std::string line = part == nullptr ? "AUTH LOGIN\r\n" : base64(*part) + "\r\n";
        if (const IoStatus st = io.write_all(line, deadline, {}); st != IoStatus::kOk) fail(st, "sending AUTH");
        if (const IoStatus st = io.read_reply(r, deadline, {}); st != IoStatus::kOk) fail(st, "after AUTH");
        if (r.code != 334) break;
      }
    } else {
      throw OpenError("the relay offers neither AUTH PLAIN nor AUTH LOGIN");
    }
    if (r.code != 235) throw OpenError("authentication as '" + ep.username + "' refused: \"" + r.line + "\"", r);
  }
  s->last_used_ = Clock::now();
  return s;
}

Delivery Session::send(const std::string& from, const std::string& to, const std::string& message,
                       const std::function<bool()>& abort) {
  Io& io = *io_;
  Delivery d;
  const auto deadline = Clock::now() + std::chrono::milliseconds(endpoint_.timeout_ms);
  const bool kept = messages_ > 0 || dirty_;
  last_used_ = Clock::now();
  if (!safe_address(from) || !safe_address(to)) {
    d.error = "an address holds CR, LF or an angle bracket";
    d.reusable = true;
    return d;
  }
  const std::string mail = "MAIL FROM:<" + from + ">\r\n", rcpt = "RCPT TO:<" + to + ">\r\n";
  // Replies expected, in order; the first is RSET's on a kept pipelined session.
  const bool pipe = caps_.pipelining && endpoint_.use_pipelining;
  const bool rset = pipe && kept;
  dirty_ = true;
  bool any_reply = false;
  const auto lost = [&](IoStatus st, const std::string& what) {
    d.outcome = Outcome::kNotTaken;
    d.error = describe(st, what, io.error);
    d.stale = kept && !any_reply && st == IoStatus::kClosed;
    d.reusable = false;
    return d;
  };
  Reply r_rset, r_mail, r_rcpt, r_data;
  if (pipe) {
    const std::string group = (rset ? "RSET\r\n" : "") + mail + rcpt + "DATA\r\n";
    if (const IoStatus st = io.write_all(group, deadline, abort); st != IoStatus::kOk) return lost(st, "sending MAIL/RCPT/DATA");
    if (rset) {
      if (const IoStatus st = io.read_reply(r_rset, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for RSET's reply");
      any_reply = true;
    }
    if (const IoStatus st = io.read_reply(r_mail, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for MAIL's reply");
    any_reply = true;
    if (const IoStatus st = io.read_reply(r_rcpt, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for RCPT's reply");
    if (const IoStatus st = io.read_reply(r_data, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for DATA's reply");
  } else {
    const std::pair<const std::string*, Reply*> steps[] = {{&mail, &r_mail}, {&rcpt, &r_rcpt}};
    for (const auto& [cmd, reply] : steps) {
      if (const IoStatus st = io.write_all(*cmd, deadline, abort); st != IoStatus::kOk) return lost(st, "sending " + cmd->substr(0, 4));
      if (const IoStatus st = io.read_reply(*reply, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for " + cmd->substr(0, 4) + "'s reply");
      any_reply = true;
      if (!reply->positive()) break;
    }
    if (r_mail.positive() && r_rcpt.positive()) {
      if (const IoStatus st = io.write_all("DATA\r\n", deadline, abort); st != IoStatus::kOk) return lost(st, "sending DATA");
      if (const IoStatus st = io.read_reply(r_data, deadline, abort); st != IoStatus::kOk) return lost(st, "waiting for DATA's reply");
    }
  }

  // The envelope's verdict. A refusal leaves the session usable once RSET.
  const auto refused = [&](const Reply& r, const std::string& stage, Outcome o) {
    d.outcome = o;
    d.refusal = r;
    d.error = stage + " failed: \"" + r.line + "\"";
    return d;
  };
  if (rset && r_rset.code != 250) refused(r_rset, "RSET", Outcome::kNotTaken);
  else if (!r_mail.positive()) refused(r_mail, "MAIL FROM", Outcome::kNotTaken);
  else if (!r_rcpt.positive()) refused(r_rcpt, "RCPT TO", r_rcpt.permanent() ? Outcome::kRecipientRejected : Outcome::kNotTaken);
  else if (r_data.code != 354) refused(r_data, "DATA", Outcome::kNotTaken);
  if (d.refusal.code != 0) {
    // A kept session that a relay closes as idle may say 421 to the first
    // command of the group instead of nothing: nothing was handed over.
    const Reply& first = rset ? r_rset : r_mail;
    if (kept && d.refusal.code == 421 && first.code == 421) {
      d.stale = true;
      return d;
    }
    // RFC 2920 3.1: DATA accepted after a failed envelope is ended with a lone dot.
    if (r_data.code == 354) {
      Reply end;
      if (io.write_all(".\r\n", deadline, abort) != IoStatus::kOk || io.read_reply(end, deadline, abort) != IoStatus::kOk) return d;
    }
    d.reusable = reset();
    return d;
  }

  if (abort && abort()) {
    // Nothing of the body is out yet: end DATA with a lone dot, which a relay
    // would take as an empty message, is worse than dropping the session.
    d.error = "cancelled";
    return d;
  }
  const std::string body = dot_stuff(message);
  if (const IoStatus st = io.write_all(body, deadline, abort); st != IoStatus::kOk) return lost(st, "sending the message");
  // From here on the relay may have the whole message: only its refusal says
  // it was not taken, and no abort() any more.
  Reply end;
  if (const IoStatus st = io.read_reply(end, deadline, {}); st != IoStatus::kOk) {
    d.outcome = Outcome::kUnknown;
    d.error = describe(st, "waiting for the reply to the end of the message", io.error);
    return d;
  }
  if (end.code == 250) {
    d.outcome = Outcome::kSent;
    ++messages_;
    dirty_ = false;
    d.reusable = true;
    return d;
  }
  if (end.transient() || end.permanent()) {
    refused(end, "the end of the message", Outcome::kNotTaken);
    d.reusable = reset();
    return d;
  }
  d.outcome = Outcome::kUnknown;
  d.error = "unexpected reply to the end of the message: \"" + end.line + "\"";
  return d;
}

bool Session::idle_ok() {
  Io& io = *io_;
  if (!io.in.empty()) return false;  // something unasked, e.g. "421 idle timeout"
  if (io.ssl != nullptr && SSL_pending(io.ssl) > 0) return false;
  pollfd p{io.fd, POLLIN, 0};
  const int r = poll(&p, 1, 0);
  return r == 0;  // readable means closed or talking out of turn; either way not a session to use
}

bool Session::reset() {
  Io& io = *io_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(endpoint_.timeout_ms);
  Reply r;
  if (io.write_all("RSET\r\n", deadline, {}) != IoStatus::kOk || io.read_reply(r, deadline, {}) != IoStatus::kOk) return false;
  dirty_ = false;
  return r.code == 250;
}

void Session::quit() {
  Io& io = *io_;
  // Best effort, without waiting: the relay learns we are done.
  io.write_all("QUIT\r\n", Clock::now() + std::chrono::milliseconds(100), {});
  if (io.ssl != nullptr) SSL_shutdown(io.ssl);
}

}  // namespace smtp_client
