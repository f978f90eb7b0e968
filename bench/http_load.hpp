// http_load.hpp: a small HTTP load and attack generator for the admin API, used
// by bench/api_attack.cpp and the API's attack tests. Loopback only: every
// target and source address must be in 127.0.0.0/8 (anything else throws), and
// every loop ends by itself at its deadline.
//
// The attack is the one of the hardening issue: connections that send half a
// request line and then trickle one byte a second (reopened when the server
// drops them), plus malformed requests at a fixed rate on fresh connections.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace jobhost::load {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Throws std::invalid_argument unless addr is an IPv4 literal in 127.0.0.0/8.
void require_loopback(const std::string& addr);

struct Response {
  int status = 0;  // 0: closed without a status line; -1: timed out; -2: connect failed
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

// One request on a fresh connection (the way a kubelet probes), bounded by
// timeout. shut_write: end the sending side after the request, so that a
// request the server finds incomplete ends at once instead of at a timeout.
Response request_once(const std::string& addr, int port, const std::string& raw, milliseconds timeout,
                      const std::string& source = "", bool shut_write = false);

// A keep-alive client: requests one after another on one connection,
// reconnecting when the server closes it.
class Client {
 public:
  Client(std::string addr, int port, std::string source = "", milliseconds timeout = milliseconds(5000));
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Response send(const std::string& raw);

 private:
  std::string addr_, source_;
  int port_;
  milliseconds timeout_;
  int fd_ = -1;
  std::string buffered_;  // bytes read past the previous response
};

std::string get_request(const std::string& path, const std::string& extra_headers = "");
std::string post_request(const std::string& path, const std::string& body,
                         const std::string& extra_headers = "");

// Latencies in milliseconds; a failed or timed-out request counts as a failure
// and, at its timeout, as a latency too (so a p99 cannot hide it).
struct Latencies {
  std::vector<double> ms;
  int failures = 0;
  double percentile(double q) const;
  double max() const;
  std::string summary() const;  // "n=…, p50 …, p99 …, max … ms, failures …"
};

// GET path on a fresh connection every interval until deadline; 2xx and 503
// (an honest "not ready") are answers, anything else a failure.
Latencies probe(const std::string& addr, int port, const std::string& path, milliseconds interval,
                Clock::time_point deadline, milliseconds timeout = milliseconds(1000));

// Requests on `clients` keep-alive connections until the deadline, each
// client one after another (per_client_per_s = 0) or paced at that rate;
// counts the answers with the expected status.
struct Throughput {
  long ok = 0;
  long other = 0;
  double seconds = 0;
  Latencies latencies;
  double rate() const { return seconds > 0 ? ok / seconds : 0; }
};
Throughput closed_loop(const std::string& addr, int port, int clients, Clock::time_point deadline,
                       const std::function<std::string(long)>& request, int expected_status,
                       const std::string& source = "", double per_client_per_s = 0);

// Malformed requests of many kinds (random bytes and methods, path tricks, SQL
// in a query string, broken framing, oversized or deeply nested JSON...).
// Deterministic for a seed.
std::string garbage_request(uint64_t seed, const std::string& token = "");

struct AttackOptions {
  std::string addr = "127.0.0.1";
  int port = 0;
  int stalled = 1000;          // connections held half-sent
  int stall_sources = 20;      // spread over 127.0.0.2 .. 127.0.0.(1+N)
  milliseconds trickle{1000};  // one more byte this often (0: send once and wait)
  int garbage_per_second = 1000;
  int garbage_threads = 4;
  std::string garbage_source = "127.0.0.200";
  milliseconds garbage_timeout{300};
  std::string token;  // used by some garbage requests, so that bodies reach the parser
  uint64_t seed = 1;
};

// Runs until stop() or destruction.
class Attack {
 public:
  explicit Attack(AttackOptions o);
  ~Attack();
  Attack(const Attack&) = delete;
  Attack& operator=(const Attack&) = delete;
  void start();
  void stop();

  int open_stalled() const { return open_stalled_.load(); }  // connected and stalling now
  long stall_reconnects() const { return stall_reconnects_.load(); }
  long garbage_sent() const { return garbage_sent_.load(); }
  std::map<int, long> garbage_statuses() const;  // status → count (0 closed, -1 timeout, -2 refused)
  std::string summary() const;

 private:
  void stall_loop();
  void garbage_loop(int index);

  AttackOptions o_;
  std::atomic<bool> stop_{false};
  std::atomic<int> open_stalled_{0};
  std::atomic<long> stall_reconnects_{0};
  std::atomic<long> garbage_sent_{0};
  mutable std::mutex mu_;
  std::map<int, long> statuses_;
  std::vector<std::thread> threads_;
};

}  // namespace jobhost::load
