// smtp_sink.cpp: the SMTP sink (see smtp_sink.hpp).
#include "smtp_sink.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
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

}  // namespace

Sink::Sink(uint16_t port, std::filesystem::path maildir) : maildir_(std::move(maildir)) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listen_fd_, 64) != 0) {
    close(listen_fd_);
    throw std::runtime_error("smtp sink: cannot listen on 127.0.0.1:" + std::to_string(port));
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (!maildir_.empty()) std::filesystem::create_directories(maildir_);
  acceptor_ = std::thread([this] { accept_loop(); });
}

Sink::~Sink() { stop(); }

void Sink::stop() {
  if (stopping_.exchange(true)) return;
  shutdown(listen_fd_, SHUT_RDWR);
  close(listen_fd_);
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (const int fd : clients_) shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

std::vector<Message> Sink::messages() const {
  std::lock_guard lock(mu_);
  return messages_;
}

void Sink::accept_loop() {
  while (!stopping_) {
    const int fd = accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    ++connections_;
    std::lock_guard lock(mu_);
    clients_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void Sink::serve(int fd) {
  std::string buffer;
  const auto reply = [&](const std::string& text) {
    if (const int ms = delay_ms_; ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    const std::string out = text + "\r\n";
    return send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size());
  };
  // One line without its CRLF; false when the peer went away.
  const auto read_line = [&](std::string& line) {
    for (;;) {
      const auto end = buffer.find("\r\n");
      if (end != std::string::npos) {
        line = buffer.substr(0, end);
        buffer.erase(0, end + 2);
        return true;
      }
      char chunk[4096];
      const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return false;
      buffer.append(chunk, static_cast<size_t>(n));
    }
  };
  Message m;
  std::string line;
  if (reply("220 jobhost-smtp-sink ready")) {
    while (read_line(line)) {
      if (starts_with_ci(line, "EHLO")) {
        if (!reply("250-jobhost-smtp-sink\r\n250-8BITMIME\r\n250 SIZE 35882577")) break;
      } else if (starts_with_ci(line, "HELO")) {
        if (!reply("250 jobhost-smtp-sink")) break;
      } else if (starts_with_ci(line, "MAIL FROM:")) {
        if (const int code = refuse_code_; code != 0) {
          if (!reply(std::to_string(code) + " refused by the test sink")) break;
          continue;
        }
        m = Message{address_of(line), {}, {}};
        if (!reply("250 sender ok")) break;
      } else if (starts_with_ci(line, "RCPT TO:")) {
        m.to.push_back(address_of(line));
        if (!reply("250 recipient ok")) break;
      } else if (starts_with_ci(line, "DATA")) {
        if (m.to.empty()) {
          if (!reply("503 no recipients")) break;
          continue;
        }
        if (!reply("354 end with <CRLF>.<CRLF>")) break;
        bool complete = false;
        while (read_line(line)) {
          if (line == ".") {
            complete = true;
            break;
          }
          m.data += (line.rfind("..", 0) == 0 ? line.substr(1) : line) + "\r\n";  // dot-unstuffing
        }
        if (!complete) break;
        size_t n = 0;
        {
          std::lock_guard lock(mu_);
          messages_.push_back(m);
          n = messages_.size();
        }
        if (!maildir_.empty()) {
          std::ofstream(maildir_ / (std::to_string(n) + ".eml"), std::ios::binary) << m.data;
        }
        m = Message{};
        if (!reply("250 queued as " + std::to_string(n))) break;
      } else if (starts_with_ci(line, "RSET")) {
        m = Message{};
        if (!reply("250 ok")) break;
      } else if (starts_with_ci(line, "NOOP")) {
        if (!reply("250 ok")) break;
      } else if (starts_with_ci(line, "QUIT")) {
        reply("221 bye");
        break;
      } else {
        if (!reply("500 unknown command")) break;
      }
    }
  }
  close(fd);
  std::lock_guard lock(mu_);
  clients_.erase(std::remove(clients_.begin(), clients_.end(), fd), clients_.end());
}

}  // namespace smtp
