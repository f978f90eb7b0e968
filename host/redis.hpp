// redis.hpp: a small synchronous Redis client over hiredis: RAII replies,
// pipelines, Lua scripts by SHA, and reconnecting after errors.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <hiredis/hiredis.h>

namespace jobhost {

class RedisError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct RedisUrl {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string password;
  int db = 0;
};

// Parses redis://[:password@]host[:port][/db]. Throws RedisError naming the URL.
RedisUrl parse_redis_url(const std::string& url);

// A Lua script and its SHA1, computed once.
class RedisScript {
 public:
  explicit RedisScript(std::string text);
  const std::string& text() const { return text_; }
  const std::string& sha() const { return sha_; }

 private:
  std::string text_;
  std::string sha_;
};

// One connection. Not thread-safe: each thread that talks to Redis owns one.
// After any I/O error the connection is dropped and the next call reconnects.
class Redis {
 public:
  explicit Redis(std::string url, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~Redis();
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // Runs one command. Throws RedisError on I/O errors and on error replies.
  Reply command(const std::vector<std::string>& argv);

  // Queues a command; get_reply() returns the replies in order (one round trip).
  void append(const std::vector<std::string>& argv);
  Reply get_reply();  // throws on I/O errors; error replies are returned, not thrown

  // Runs a Lua script by SHA, loading it on NOSCRIPT.
  Reply eval(const RedisScript& script, const std::vector<std::string>& keys,
             const std::vector<std::string>& args);

  // Sets the socket timeout for the next commands (e.g. longer for BLPOP).
  void set_timeout(std::chrono::milliseconds timeout);

  // Drops the connection; the next call reconnects.
  void reset();

  const std::string& url() const { return url_; }

 private:
  void ensure_connected();
  [[noreturn]] void fail(const std::string& what);

  std::string url_;
  RedisUrl parsed_;
  std::chrono::milliseconds timeout_;
  redisContext* ctx_ = nullptr;
  size_t pending_ = 0;
};

// Connections shared by threads that talk to Redis now and then (handlers'
// limiters, slot releases): each call borrows one, so callers never share a
// connection at once. At most `max_idle` are kept between calls.
class RedisPool {
 public:
  RedisPool(std::string url, size_t max_idle) : url_(std::move(url)), max_idle_(max_idle) {}

  template <typename Fn>
  auto with(Fn&& fn) {
    std::unique_ptr<Redis> r = acquire();
    struct Back {
      RedisPool& pool;
      std::unique_ptr<Redis>& r;
      ~Back() { pool.release(std::move(r)); }  // a Redis that failed reconnects on its next use
    } back{*this, r};
    return fn(*r);
  }

 private:
  std::unique_ptr<Redis> acquire();
  void release(std::unique_ptr<Redis> r);

  std::string url_;
  size_t max_idle_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Redis>> idle_;
};

// Refuses Redis configurations that would silently drop queued jobs
// (invariant 3): any maxmemory-policy other than noeviction. Throws RedisError
// saying which policy was found and how to fix it.
void require_non_evicting(Redis& redis);

// Number of elements of a reply that is an array (0 otherwise).
inline size_t reply_size(const Reply& r) { return r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0; }

}  // namespace jobhost
