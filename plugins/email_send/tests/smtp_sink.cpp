// smtp_sink.cpp: the SMTP sink (see smtp_sink.hpp). One thread per
// connection; finished ones are joined on the next accept, so a long demo run
// does not pile them up.
#include "smtp_sink.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace smtp {
namespace {

bool starts_with_ci(const std::string& line, const char* word) {
  for (size_t i = 0; word[i] != '\0'; ++i) {
    if (i >= line.size() || std::toupper(static_cast<unsigned char>(line[i])) != word[i]) return false;
  }
  return true;
}

// The address between < and > of a MAIL FROM / RCPT TO line.
std::string address_of(const std::string& line) {
  const auto open = line.find('<');
  const auto close = line.find('>', open);
  return open == std::string::npos || close == std::string::npos ? "" : line.substr(open + 1, close - open - 1);
}

constexpr size_t kMaxLine = 64 * 1024;  // far above SMTP's 1000; a peer sending more is dropped

}  // namespace

Sink::Sink(uint16_t port, std::filesystem::path maildir) : maildir_(std::move(maildir)) {
  // SSL_write to a client that hung up raises SIGPIPE, which would end the
  // test process (as it would end jobhost, which ignores it too).
  std::signal(SIGPIPE, SIG_IGN);
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error(std::string("smtp sink: socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 128) != 0) {
    const std::string why = std::strerror(errno);
    close(listen_fd_);
    throw std::runtime_error("smtp sink: cannot listen on 127.0.0.1:" + std::to_string(port) + ": " + why);
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (!maildir_.empty()) std::filesystem::create_directories(maildir_);
  acceptor_ = std::thread([this] { accept_loop(); });
}

Sink::~Sink() {
  stop();
  if (tls_ctx_ != nullptr) SSL_CTX_free(tls_ctx_);
}

void Sink::enable_tls(const std::string& cert_file, const std::string& key_file, bool implicit) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr || SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ctx != nullptr) SSL_CTX_free(ctx);
    throw std::runtime_error("smtp sink: cannot load the TLS certificate or key");
  }
  tls_implicit_ = implicit;
  tls_ctx_ = ctx;
}

void Sink::refuse_with(int code, Stage stage) { refuse_[static_cast<int>(stage)] = code; }

void Sink::stop() {
  if (stopping_.exchange(true)) return;
  shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  close(listen_fd_);
  std::list<std::unique_ptr<Client>> clients;
  {
    std::lock_guard lock(mu_);
    // A client's fd stays open until its thread is joined, so this cannot
    // hit a descriptor number that was reused meanwhile.
    for (const auto& c : clients_) shutdown(c->fd, SHUT_RDWR);
    clients.swap(clients_);
  }
  for (auto& c : clients) {
    c->thread.join();
    close(c->fd);
  }
}

std::vector<Message> Sink::messages() const {
  std::lock_guard lock(mu_);
  return messages_;
}

void Sink::reap_finished() {
  std::lock_guard lock(mu_);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if ((*it)->done) {
      (*it)->thread.join();
      close((*it)->fd);
      it = clients_.erase(it);
    } else {
      ++it;
    }
  }
}

void Sink::accept_loop() {
  while (!stopping_) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_ || (errno != EINTR && errno != ECONNABORTED && errno != EMFILE && errno != ENFILE)) return;
      continue;
    }
    // Each reply leaves at once, as a relay that answers a pipelined group
    // in one packet would have it: without this, Nagle's algorithm holds the
    // second small reply of a group until the client's delayed ACK (40 ms on
    // Linux), and every pipelined message waited for it.
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ++connections_;
    reap_finished();
    std::lock_guard lock(mu_);
    if (stopping_) {
      close(fd);
      return;
    }
    auto client = std::make_unique<Client>();
    client->fd = fd;
    Client& c = *client;
    clients_.push_back(std::move(client));
    c.thread = std::thread([this, &c] { serve(c); });
  }
}

namespace {

// Whether a fault armed `n` times fires now (and counts it down).
bool fires(std::atomic<int>& n) {
  int v = n.load();
  while (v != 0) {
    if (v < 0) return true;
    if (n.compare_exchange_weak(v, v - 1)) return true;
  }
  return false;
}

}  // namespace

void Sink::serve(Client& client) {
  const int fd = client.fd;
  const int now_open = ++open_;
  for (int p = peak_; now_open > p && !peak_.compare_exchange_weak(p, now_open);) {
  }
  std::string buffer;
  SSL* ssl = nullptr;  // once TLS started (STARTTLS, or at once with implicit TLS)
  const auto start_tls = [&] {
    ssl = SSL_new(tls_ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
      ERR_clear_error();
      return false;
    }
    ++tls_sessions_;
    return true;
  };
  // When the bytes of the latest command arrived: its reply leaves delay_ms after.
  auto arrived = std::chrono::steady_clock::now();
  // Sleeps in slices so stop() is not held up by a slow reply.
  const auto pause_until = [&](std::chrono::steady_clock::time_point until) {
    while (!stopping_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          until - std::chrono::steady_clock::now(), std::chrono::milliseconds(10)));
    }
  };
  // Replies wait in `out` while more commands are already here, and leave
  // together before the sink waits for input (RFC 2920: a server may hold
  // replies back while commands keep coming, never while it waits), as a
  // production relay's do: a pipelined group gets one write, not one per command.
  std::string out;
  const auto flush = [&] {
    if (out.empty()) return true;
    ++reply_writes_;
    const bool ok = ssl != nullptr ? SSL_write(ssl, out.data(), static_cast<int>(out.size())) == static_cast<int>(out.size())
                                   : send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size());
    out.clear();
    return ok;
  };
  const auto reply = [&](const std::string& text) {
    if (const int ms = delay_ms_; ms > 0) {
      if (!flush()) return false;  // what is already due goes now, not after this delay
      pause_until(arrived + std::chrono::milliseconds(ms));
    }
    out += text + "\r\n";
    return true;
  };
  // One line without its CRLF; false when the peer went away, or stayed
  // silent past the idle limit (then the session is closed, 421 first).
  const auto read_line = [&](std::string& line) {
    for (;;) {
      const auto end = buffer.find("\r\n");
      if (end != std::string::npos) {
        line = buffer.substr(0, end);
        buffer.erase(0, end + 2);
        return true;
      }
      if (buffer.size() > kMaxLine) return false;
      if (!flush()) return false;
      if (const int idle = idle_close_ms_; idle > 0) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, idle) == 0) {
          if (idle_421_) send(fd, "421 idle timeout, closing\r\n", 27, MSG_NOSIGNAL);
          return false;
        }
      }
      char chunk[16384];
      const ssize_t n = ssl != nullptr ? SSL_read(ssl, chunk, sizeof chunk) : recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return false;
      arrived = std::chrono::steady_clock::now();
      buffer.append(chunk, static_cast<size_t>(n));
    }
  };
  const auto refusal = [&](Stage s) { return refuse_[static_cast<int>(s)].load(); };
  const auto unknown = [&](std::string to) {
    for (char& c : to) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::lock_guard lock(mu_);
    return unknown_users_.count(to) > 0;
  };
  const auto domain_refusal = [&](const std::string& to) {
    std::lock_guard lock(mu_);
    const auto at = to.rfind('@');
    if (refused_domain_.empty() || refused_domain_left_ == 0 || at == std::string::npos ||
        to.substr(at + 1) != refused_domain_) {
      return 0;
    }
    --refused_domain_left_;
    ++domain_refusals_;
    return refused_domain_code_;
  };
  // A stage's misbehaviour: "drop" ends the session at once; "stall" hangs
  // until the client gives up or the sink stops.
  const auto misbehaves = [&](Stage s) {
    if (fires(drop_[static_cast<int>(s)])) {
      flush();  // the earlier commands' replies were due
      return true;
    }
    if (fires(stall_[static_cast<int>(s)])) {
      flush();
      while (!stopping_) {
        char sink[4096];
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
          if (recv(fd, sink, sizeof sink, MSG_PEEK | MSG_DONTWAIT) == 0) break;  // client gone
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      return true;
    }
    return false;
  };

  Message m;
  bool have_sender = false;
  std::string line;
  const bool implicit = tls_ctx_ != nullptr && tls_implicit_;
  if ((!implicit || start_tls()) && reply("220 jobhost-smtp-sink ready")) {
    while (read_line(line)) {
      bool ok = true;
      if (starts_with_ci(line, "EHLO")) {
        const bool offer_tls = tls_ctx_ != nullptr && !tls_implicit_ && ssl == nullptr;
        ok = reply(std::string("250-jobhost-smtp-sink\r\n") + (pipelining_ ? "250-PIPELINING\r\n" : "") +
                   (offer_tls ? "250-STARTTLS\r\n" : "") + "250-8BITMIME\r\n250 SIZE 35882577");
      } else if (starts_with_ci(line, "STARTTLS") && tls_ctx_ != nullptr && ssl == nullptr) {
        if (!reply("220 go ahead") || !flush() || !start_tls()) break;
        m = Message{};
        have_sender = false;
      } else if (starts_with_ci(line, "HELO")) {
        ok = reply("250 jobhost-smtp-sink");
      } else if (starts_with_ci(line, "MAIL FROM:")) {
        ++mail_commands_;
        // RCPT and DATA already here with MAIL: the client pipelined them.
        if (buffer.find("\r\nDATA\r\n") != std::string::npos || buffer.rfind("DATA\r\n", 0) == 0) ++pipelined_;
        if (misbehaves(Stage::kMail)) break;
        if (const int code = refusal(Stage::kMail); code != 0) {
          ok = reply(std::to_string(code) + " sender refused by the test sink");
        } else {
          m = Message{address_of(line), {}, {}};
          have_sender = true;
          ++transactions_;
          ok = reply("250 sender ok");
        }
      } else if (starts_with_ci(line, "RCPT TO:")) {
        if (misbehaves(Stage::kRcpt)) break;
        if (!have_sender) {
          ok = reply("503 need MAIL first");
        } else if (const int code = refusal(Stage::kRcpt); code != 0) {
          ok = reply(std::to_string(code) + " recipient refused by the test sink");
        } else if (unknown(address_of(line))) {
          ok = reply("550 5.1.1 <" + address_of(line) + ">: Recipient address rejected: User unknown (test sink)");
        } else if (const int code = domain_refusal(address_of(line)); code != 0) {
          ok = reply(std::to_string(code) + " try later: too much mail for this domain (test sink)");
        } else {
          m.to.push_back(address_of(line));
          ok = reply("250 recipient ok");
        }
      } else if (starts_with_ci(line, "DATA")) {
        if (misbehaves(Stage::kData)) break;
        if (m.to.empty()) {
          ok = reply("503 no recipients");
        } else if (const int code = refusal(Stage::kData); code != 0) {
          ok = reply(std::to_string(code) + " data refused by the test sink");
        } else if (!reply("354 end with <CRLF>.<CRLF>")) {
          break;
        } else {
          bool complete = false;
          while (read_line(line)) {
            if (line == ".") {
              complete = true;
              break;
            }
            m.data += (line.rfind('.', 0) == 0 ? line.substr(1) : line) + "\r\n";  // dot-unstuffing
          }
          if (!complete) break;
          const bool drop = fires(drop_[static_cast<int>(Stage::kEndOfData)]);
          if (const int code = refusal(Stage::kEndOfData); code != 0 && !drop) {
            ok = reply(std::to_string(code) + " message refused by the test sink");
          } else {
            size_t n = 0;
            {
              std::lock_guard lock(mu_);
              n = ++received_;
              if (keep_) messages_.push_back(m);
            }
            if (!maildir_.empty()) {
              std::ofstream(maildir_ / (std::to_string(n) + ".eml"), std::ios::binary) << m.data;
            }
            if (drop) {
              flush();
              break;
            }
            if (const int ms = delay_end_ms_; ms > 0) {
              if (!flush()) break;
              pause_until(std::chrono::steady_clock::now() + std::chrono::milliseconds(ms));
            }
            ok = reply("250 queued as " + std::to_string(n));
          }
          m = Message{};
          have_sender = false;
        }
      } else if (starts_with_ci(line, "RSET")) {
        m = Message{};
        have_sender = false;
        ok = reply("250 ok");
      } else if (starts_with_ci(line, "NOOP")) {
        ok = reply("250 ok");
      } else if (starts_with_ci(line, "QUIT")) {
        reply("221 bye");
        flush();
        break;
      } else {
        ok = reply("500 unknown command");
      }
      if (!ok) break;
    }
    flush();
  }
  if (ssl != nullptr) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
  shutdown(fd, SHUT_RDWR);
  --open_;
  client.done = true;
}

}  // namespace smtp
