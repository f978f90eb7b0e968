// redis.cpp: hiredis wrapper.
#include "redis.hpp"

#include <openssl/sha.h>

#include <cstdio>
#include <regex>

namespace jobhost {
namespace {

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

std::string sha1_hex(const std::string& text) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  char hex[SHA_DIGEST_LENGTH * 2 + 1];
  for (int i = 0; i < SHA_DIGEST_LENGTH; ++i) std::snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  return hex;
}

void argv_of(const std::vector<std::string>& argv, std::vector<const char*>& ptrs,
             std::vector<size_t>& lens) {
  ptrs.clear();
  lens.clear();
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
}

}  // namespace

RedisUrl parse_redis_url(const std::string& url) {
  static const std::regex re(R"(^redis://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/]+)(?::(\d+))?(?:/(\d+))?/?$)");
  std::smatch m;
  if (!std::regex_match(url, m, re)) {
    throw RedisError("invalid Redis URL '" + url + "': expected redis://[:password@]host[:port][/db]");
  }
  RedisUrl out;
  out.password = m[2].matched ? m[2].str() : "";
  out.host = m[3].str();
  if (m[4].matched) out.port = std::stoi(m[4].str());
  if (m[5].matched) out.db = std::stoi(m[5].str());
  return out;
}

Redis::Redis(std::string url, std::chrono::milliseconds timeout)
    : url_(std::move(url)), parsed_(parse_redis_url(url_)), timeout_(timeout) {}

Redis::~Redis() { reset(); }

void Redis::reset() {
  if (ctx_ != nullptr) redisFree(ctx_);
  ctx_ = nullptr;
  pending_ = 0;
}

void Redis::fail(const std::string& what) {
  const std::string detail = ctx_ != nullptr && ctx_->err ? ctx_->errstr : "connection lost";
  reset();
  throw RedisError("Redis " + parsed_.host + ":" + std::to_string(parsed_.port) + ": " + what +
                   ": " + detail);
}

void Redis::ensure_connected() {
  if (ctx_ != nullptr) return;
  const timeval tv = to_timeval(timeout_);
  ctx_ = redisConnectWithTimeout(parsed_.host.c_str(), parsed_.port, tv);
  if (ctx_ == nullptr || ctx_->err) fail("cannot connect");
  redisSetTimeout(ctx_, tv);
  if (!parsed_.password.empty()) command({"AUTH", parsed_.password});
  if (parsed_.db != 0) command({"SELECT", std::to_string(parsed_.db)});
}

void Redis::set_timeout(std::chrono::milliseconds timeout) {
  timeout_ = timeout;
  if (ctx_ != nullptr) redisSetTimeout(ctx_, to_timeval(timeout));
}

Reply Redis::command(const std::vector<std::string>& argv) {
  append(argv);
  Reply r = get_reply();
  if (r->type == REDIS_REPLY_ERROR) {
    throw RedisError("Redis " + argv.front() + ": " + std::string(r->str, r->len));
  }
  return r;
}

void Redis::append(const std::vector<std::string>& argv) {
  ensure_connected();
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  argv_of(argv, ptrs, lens);
  if (redisAppendCommandArgv(ctx_, static_cast<int>(argv.size()), ptrs.data(), lens.data()) !=
      REDIS_OK) {
    fail("cannot queue command");
  }
  ++pending_;
}

Reply Redis::get_reply() {
  if (ctx_ == nullptr || pending_ == 0) throw RedisError("Redis: get_reply without a pending command");
  void* raw = nullptr;
  if (redisGetReply(ctx_, &raw) != REDIS_OK || raw == nullptr) fail("no reply");
  --pending_;
  return Reply(static_cast<redisReply*>(raw));
}

RedisScript::RedisScript(std::string text) : text_(std::move(text)), sha_(sha1_hex(text_)) {}

Reply Redis::eval(const RedisScript& script, const std::vector<std::string>& keys,
                  const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"EVALSHA", script.sha(), std::to_string(keys.size())};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  append(argv);
  Reply r = get_reply();
  if (r->type == REDIS_REPLY_ERROR && std::string(r->str, r->len).rfind("NOSCRIPT", 0) == 0) {
    argv[0] = "EVAL";
    argv[1] = script.text();
    return command(argv);
  }
  if (r->type == REDIS_REPLY_ERROR) throw RedisError("Redis script: " + std::string(r->str, r->len));
  return r;
}

std::unique_ptr<Redis> RedisPool::acquire() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto r = std::move(idle_.back());
      idle_.pop_back();
      return r;
    }
  }
  return std::make_unique<Redis>(url_, std::chrono::seconds(2));
}

void RedisPool::release(std::unique_ptr<Redis> r) {
  std::lock_guard lock(mu_);
  if (idle_.size() < max_idle_) idle_.push_back(std::move(r));
}

void require_non_evicting(Redis& redis) {
  Reply r = redis.command({"CONFIG", "GET", "maxmemory-policy"});
  if (reply_size(r) < 2) {
    throw RedisError("Redis at " + redis.url() +
                     " did not answer CONFIG GET maxmemory-policy; jobhost needs it to check that "
                     "queued jobs cannot be evicted");
  }
  const std::string policy(r->element[1]->str, r->element[1]->len);
  if (policy != "noeviction") {
    throw RedisError("Redis at " + redis.url() + " has maxmemory-policy '" + policy +
                     "', which evicts keys and would silently drop queued jobs; set it to "
                     "'noeviction' (CONFIG SET maxmemory-policy noeviction, or in redis.conf)");
  }
}

}  // namespace jobhost

