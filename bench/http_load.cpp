// http_load.cpp: blocking sockets with poll() deadlines; one thread keeps every
// stalled connection, a few threads send the garbage (see http_load.hpp).
#include "http_load.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>

namespace jobhost::load {
namespace {

sockaddr_in address_of(const std::string& addr, int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) != 1)
    throw std::invalid_argument("not an IPv4 address: " + addr);
  return sa;
}

// Binds fd to a source address, its port left for connect() to choose. With
// port 0 and no IP_BIND_ADDRESS_NO_PORT, bind() itself searches the whole port
// range for a port free of every listener and TIME_WAIT socket, under the
// kernel's bind-hash locks: at a thousand connections a second that search
// took most of this generator's CPU (perf: inet_bind2_bucket_find), time in
// the kernel of the host's own machine that no remote attacker would cost it.
bool bind_source(int fd, const sockaddr_in& src) {
  const int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  return bind(fd, reinterpret_cast<const sockaddr*>(&src), sizeof src) == 0;
}

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::max<long long>(0, left));
}

// A socket bound to source (when given), connected within the deadline; -1 on failure.
int connect_to(const std::string& addr, int port, const std::string& source, Clock::time_point deadline) {
  require_loopback(addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!source.empty()) {
    require_loopback(source);
    if (!bind_source(fd, address_of(source, 0))) {
      close(fd);
      return -1;
    }
  }
  const sockaddr_in sa = address_of(addr, port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  pollfd p{fd, POLLOUT, 0};
  int err = 0;
  socklen_t len = sizeof err;
  if (poll(&p, 1, remaining_ms(deadline)) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
      err != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool write_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, remaining_ms(deadline)) != 1) return false;
  }
  return true;
}

// Reads one response from fd into r, using and refilling buffered.
// Returns false when the connection cannot carry another request.
bool read_response(int fd, std::string& buffered, Clock::time_point deadline, Response& r) {
  auto fill = [&]() -> int {  // 1 data, 0 eof, -1 timeout, -3 error
    char chunk[16384];
    for (;;) {
      const ssize_t n = recv(fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        buffered.append(chunk, static_cast<size_t>(n));
        return 1;
      }
      if (n == 0) return 0;
      if (errno != EAGAIN && errno != EINTR) return -3;
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, remaining_ms(deadline)) != 1) return -1;
    }
  };
  size_t end = 0;
  while ((end = buffered.find("\r\n\r\n")) == std::string::npos) {
    const int got = fill();
    if (got <= 0) {
      r.status = got == -1 ? -1 : 0;
      return false;
    }
  }
  const std::string head = buffered.substr(0, end);
  buffered.erase(0, end + 4);
  int status = 0;
  if (std::sscanf(head.c_str(), "HTTP/%*d.%*d %d", &status) != 1) {
    r.status = 0;
    return false;
  }
  size_t pos = head.find("\r\n");
  while (pos != std::string::npos) {
    const size_t next = head.find("\r\n", pos + 2);
    const std::string line =
        head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    if (const size_t colon = line.find(':'); colon != std::string::npos) {
      std::string name = line.substr(0, colon);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      r.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1) == std::string::npos
                                        ? line.size()
                                        : line.find_first_not_of(' ', colon + 1));
    }
    pos = next;
  }
  const auto cl = r.headers.find("content-length");
  if (cl != r.headers.end()) {
    const size_t want = std::stoul(cl->second);
    while (buffered.size() < want) {
      if (fill() <= 0) {
        r.status = -1;
        return false;
      }
    }
    r.body = buffered.substr(0, want);
    buffered.erase(0, want);
  } else {
    while (fill() > 0) {
    }
    r.body = std::move(buffered);
    buffered.clear();
    r.status = status;
    return false;
  }
  r.status = status;
  const auto conn = r.headers.find("connection");
  return conn == r.headers.end() || conn->second.find("close") == std::string::npos;
}

}  // namespace

void require_loopback(const std::string& addr) {
  in_addr a{};
  if (inet_pton(AF_INET, addr.c_str(), &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) {
    throw std::invalid_argument("loopback only (127.0.0.0/8): " + addr);
  }
}

Response request_once(const std::string& addr, int port, const std::string& raw, milliseconds timeout,
                      const std::string& source, bool shut_write) {
  const auto deadline = Clock::now() + timeout;
  Response r;
  const int fd = connect_to(addr, port, source, deadline);
  if (fd < 0) {
    r.status = -2;
    return r;
  }
  if (write_all(fd, raw, deadline)) {
    if (shut_write) shutdown(fd, SHUT_WR);
    std::string buffered;
    read_response(fd, buffered, deadline, r);
  }
  close(fd);
  return r;
}

Client::Client(std::string addr, int port, std::string source, milliseconds timeout)
    : addr_(std::move(addr)), source_(std::move(source)), port_(port), timeout_(timeout) {}

Client::~Client() {
  if (fd_ >= 0) close(fd_);
}

Response Client::send(const std::string& raw) {
  const auto deadline = Clock::now() + timeout_;
  Response r;
  if (fd_ < 0) {
    fd_ = connect_to(addr_, port_, source_, deadline);
    buffered_.clear();
    if (fd_ < 0) {
      r.status = -2;
      return r;
    }
  }
  const bool ok = write_all(fd_, raw, deadline) && read_response(fd_, buffered_, deadline, r);
  if (!ok) {
    close(fd_);
    fd_ = -1;
  }
  return r;
}

std::string get_request(const std::string& path, const std::string& extra_headers) {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
}

std::string post_request(const std::string& path, const std::string& body, const std::string& extra_headers) {
  return "POST " + path +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra_headers + "\r\n" + body;
}

double Latencies::percentile(double q) const {
  if (ms.empty()) return 0;
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  return sorted[i];
}

double Latencies::max() const { return ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end()); }

std::string Latencies::summary() const {
  char buf[160];
  std::snprintf(buf, sizeof buf, "n=%zu p50 %.2f ms, p99 %.2f ms, max %.2f ms, failures %d", ms.size(),
                percentile(0.5), percentile(0.99), max(), failures);
  return buf;
}

Latencies probe(const std::string& addr, int port, const std::string& path, milliseconds interval,
                Clock::time_point deadline, milliseconds timeout) {
  Latencies out;
  const std::string raw = get_request(path, "Connection: close\r\n");
  for (auto next = Clock::now(); Clock::now() < deadline; next += interval) {
    std::this_thread::sleep_until(next);
    const auto t0 = Clock::now();
    const Response r = request_once(addr, port, raw, timeout, "127.0.0.1");
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    out.ms.push_back(ms);
    if (!((r.status >= 200 && r.status < 300) || r.status == 503)) ++out.failures;
  }
  return out;
}

Throughput closed_loop(const std::string& addr, int port, int clients, Clock::time_point deadline,
                       const std::function<std::string(long)>& request, int expected_status,
                       const std::string& source, double per_client_per_s) {
  std::atomic<long> sequence{0};
  std::mutex mu;
  Throughput out;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&] {
      Client c(addr, port, source);
      const auto interval = per_client_per_s > 0 ? std::chrono::duration_cast<Clock::duration>(
                                                       std::chrono::duration<double>(1 / per_client_per_s))
                                                 : Clock::duration::zero();
      Throughput mine;
      for (auto next = Clock::now(); Clock::now() < deadline; next += interval) {
        if (interval > Clock::duration::zero()) std::this_thread::sleep_until(next);
        const auto start = Clock::now();
        const Response r = c.send(request(sequence++));
        mine.latencies.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
        if (r.status == expected_status) {
          ++mine.ok;
        } else {
          ++mine.other;
          ++mine.latencies.failures;
        }
      }
      std::lock_guard lock(mu);
      out.ok += mine.ok;
      out.other += mine.other;
      out.latencies.failures += mine.latencies.failures;
      out.latencies.ms.insert(out.latencies.ms.end(), mine.latencies.ms.begin(), mine.latencies.ms.end());
    });
  }
  for (auto& t : threads) t.join();
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return out;
}

std::string garbage_request(uint64_t seed, const std::string& token) {
  std::mt19937_64 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xff);
    return s;
  };
  const std::string auth = token.empty() ? "" : "Authorization: Bearer " + token + "\r\n";
  static const char* const kPaths[] = {
      "/../../../etc/passwd",
      "/api/v1/jobs/..%2f..%2fetc",
      "//api//v1//jobs",
      "/api/v1/jobs/%00",
      "/%ZZ%",
      "/api/v1/dlq?queue=%",
      "*",
      "http://evil.example/",
      "/api/v1/jobs/\xff\xfe",
  };
  static const char* const kSql[] = {
      "' OR 1=1 --",
      "noop'; DROP TABLE jobhost.jobs; --",
      "1;SELECT pg_sleep(10)",
      "%27%20OR%20%271%27%3D%271",
  };
  switch (pick(11)) {
    case 0:
      return random_bytes(1 + pick(512));
    case 1: {  // a method of random letters or bytes
      std::string method = pick(2) ? random_bytes(1 + pick(12)) : std::string("PROPFIND");
      return method + " /api/v1/queues HTTP/1.1\r\nHost: x\r\n\r\n";
    }
    case 2:
      return std::string("GET ") + kPaths[pick(std::size(kPaths))] + " HTTP/1.1\r\nHost: x\r\n\r\n";
    case 3: {
      const char* sql = kSql[pick(std::size(kSql))];
      const char* route = pick(2) ? "/api/v1/dlq?queue=" : "/api/v1/failures?limit=";
      return std::string("GET ") + route + sql + " HTTP/1.1\r\nHost: x\r\n\r\n";
    }
    case 4:  // header lines that are not headers, or far too long
      switch (pick(3)) {
        case 0:
          return "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n";
        case 1:
          return "GET /healthz HTTP/1.1\r\nX-Big: " + std::string(20000 + pick(50000), 'a') + "\r\n\r\n";
        default:
          return std::string("GET /healthz HTTP/1.1\r\nX\0Nul: 1\r\n\r\n", 35);
      }
    case 5: {  // framing that does not add up
      static const char* const kLengths[] = {"abc", "-1", "1, 2", "99999999999999999999",
                                             "5\r\nContent-Length: 7"};
      return std::string("POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n") + auth +
             "Content-Length: " + kLengths[pick(std::size(kLengths))] + "\r\n\r\n{\"a\":1}";
    }
    case 6:
      return "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth +
             "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    case 7: {  // JSON bodies that must never become a job
      static const std::string kBodies[] = {
          R"({"type": "noop",)",
          R"({"type": "noop", "type": "noop"})",
          "[1, 2, 3]",
          "\"noop\"",
          R"({"type": "no)"
          "\xc3\x28"
          R"(op"})",
          R"({"type": 7})",
          R"({"type": "noop", "priority": 1e400})",
          std::string(5000, '[') + std::string(5000, ']'),
          R"({"type": "noop", "payload": )" + std::string(3000, '{') + std::string(3000, '}'),
          R"({"type": "noop", "payload": {"a": 1, "a": 2}})",
          R"({"type": "noop", "extra": true})",
      };
      return post_request("/api/v1/jobs", kBodies[pick(std::size(kBodies))], auth);
    }
    case 8:  // a huge declared body that never comes
      return "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 10000000000\r\n\r\n{";
    case 9: {  // other protocols at the HTTP port
      static const std::string kOthers[] = {
          "GET /\r\n",
          std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
          std::string("\x16\x03\x01\x02\x00\x01", 6),
          "GET /healthz HTTP/9.9\r\n\r\n",
      };
      return kOthers[pick(std::size(kOthers))];
    }
    default: {  // methods the API does not route
      static const char* const kMethods[] = {"DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "CONNECT"};
      return std::string(kMethods[pick(std::size(kMethods))]) + " /api/v1/jobs HTTP/1.1\r\nHost: x\r\n" +
             auth + "Content-Length: 2\r\n\r\n{}";
    }
  }
}

Attack::Attack(AttackOptions o) : o_(std::move(o)) {
  require_loopback(o_.addr);
  require_loopback(o_.garbage_source);
  if (o_.stalled < 0 || o_.stalled > 10000) throw std::invalid_argument("stalled: 0 to 10000");
  if (o_.garbage_per_second < 0 || o_.garbage_per_second > 20000) {
    throw std::invalid_argument("garbage_per_second: 0 to 20000");
  }
  if (o_.stall_sources < 1 || o_.stall_sources > 250) throw std::invalid_argument("stall_sources: 1 to 250");
}

Attack::~Attack() { stop(); }

void Attack::start() {
  if (o_.stalled > 0) threads_.emplace_back([this] { stall_loop(); });
  if (o_.garbage_per_second > 0) {
    for (int i = 0; i < o_.garbage_threads; ++i) threads_.emplace_back([this, i] { garbage_loop(i); });
  }
}

void Attack::stop() {
  stop_ = true;
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::map<int, long> Attack::garbage_statuses() const {
  std::lock_guard lock(mu_);
  return statuses_;
}

std::string Attack::summary() const {
  std::string out = "stalled open " + std::to_string(open_stalled()) + ", reconnects " +
                    std::to_string(stall_reconnects()) + ", garbage sent " + std::to_string(garbage_sent()) +
                    ", garbage answers:";
  for (const auto& [status, n] : garbage_statuses())
    out += " " + std::to_string(status) + "×" + std::to_string(n);
  return out;
}

// Each slot holds one connection: connecting, then stalled with half a request
// line, one more byte every trickle; reopened when the server answers or drops it.
void Attack::stall_loop() {
  struct Slot {
    int fd = -1;
    bool connected = false;
    Clock::time_point next_byte;
  };
  std::vector<Slot> slots(static_cast<size_t>(o_.stalled));
  const sockaddr_in target = address_of(o_.addr, o_.port);
  const std::string half = "GET /api/v1/qu";
  auto drop = [&](Slot& s) {
    close(s.fd);
    if (s.connected) {
      --open_stalled_;
      ++stall_reconnects_;
    }
    s = Slot{};
  };
  while (!stop_) {
    int opened = 0;
    for (size_t i = 0; i < slots.size() && opened < 200; ++i) {
      Slot& s = slots[i];
      if (s.fd >= 0) continue;
      s.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (s.fd < 0) break;
      const sockaddr_in src = address_of("127.0.0." + std::to_string(2 + i % o_.stall_sources), 0);
      if (!bind_source(s.fd, src) ||
          (connect(s.fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0 &&
           errno != EINPROGRESS)) {
        drop(s);
        continue;
      }
      ++opened;
    }
    std::vector<pollfd> fds;
    std::vector<size_t> owner;
    for (size_t i = 0; i < slots.size(); ++i) {
      if (slots[i].fd < 0) continue;
      fds.push_back({slots[i].fd, static_cast<short>(slots[i].connected ? POLLIN : POLLOUT), 0});
      owner.push_back(i);
    }
    poll(fds.data(), fds.size(), 50);
    const auto now = Clock::now();
    for (size_t k = 0; k < fds.size(); ++k) {
      Slot& s = slots[owner[k]];
      if (!s.connected) {
        if (fds[k].revents == 0) continue;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || ::send(s.fd, half.data(), half.size(), MSG_NOSIGNAL) < 0) {
          drop(s);
          continue;
        }
        s.connected = true;
        s.next_byte = now + o_.trickle;
        ++open_stalled_;
      } else if (fds[k].revents != 0) {
        drop(s);  // answered (e.g. 408) or closed by the server
      } else if (o_.trickle.count() > 0 && now >= s.next_byte) {
        if (::send(s.fd, "a", 1, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
          drop(s);
        else
          s.next_byte = now + o_.trickle;
      }
    }
  }
  for (Slot& s : slots) {
    if (s.fd >= 0) close(s.fd);
  }
  open_stalled_ = 0;
}

// Open loop at garbage_per_second / garbage_threads per thread: a fresh
// connection per request, the request written and the write side shut, the
// answer read within garbage_timeout.
void Attack::garbage_loop(int index) {
  const auto interval =
      std::chrono::duration<double>(o_.garbage_threads / static_cast<double>(o_.garbage_per_second));
  auto next = Clock::now();
  uint64_t n = 0;
  while (!stop_) {
    next += std::chrono::duration_cast<Clock::duration>(interval);
    if (next < Clock::now() - milliseconds(100)) next = Clock::now();  // behind: do not burst
    std::this_thread::sleep_until(next);
    const uint64_t seed = o_.seed * 1000003 + static_cast<uint64_t>(index) * 7919 + n++;
    const std::string raw = garbage_request(seed, o_.token);
    const auto deadline = Clock::now() + o_.garbage_timeout;
    Response r;
    const int fd = connect_to(o_.addr, o_.port, o_.garbage_source, deadline);
    if (fd < 0) {
      r.status = -2;
    } else {
      if (write_all(fd, raw, deadline)) {
        shutdown(fd, SHUT_WR);
        std::string buffered;
        read_response(fd, buffered, deadline, r);
      }
      close(fd);
    }
    ++garbage_sent_;
    std::lock_guard lock(mu_);
    ++statuses_[r.status];
  }
}

}  // namespace jobhost::load
