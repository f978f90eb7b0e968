// dispatch.cpp: the Lua scripts behind push_jobs and pop_jobs.
#include "dispatch.hpp"

#include <algorithm>

namespace jobhost {
namespace {

// KEYS: list, members, wake. ARGV: ids. Returns the ids now waiting.
const RedisScript kPush(R"lua(
redis.call('RPUSH', KEYS[1], unpack(ARGV))
redis.call('SADD', KEYS[2], unpack(ARGV))
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], '1')
return redis.call('SCARD', KEYS[2])
)lua");

// KEYS: high, normal, low, members, wake. ARGV[1]: max ids.
const RedisScript kPop(R"lua(
local want = tonumber(ARGV[1])
local out = {}
for i = 1, 3 do
  if #out >= want then break end
  local got = redis.call('LPOP', KEYS[i], want - #out)
  if got then
    for _, id in ipairs(got) do out[#out + 1] = id end
  end
end
if #out > 0 then
  redis.call('SREM', KEYS[4], unpack(out))
  if redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3]) > 0 then
    redis.call('DEL', KEYS[5])
    redis.call('RPUSH', KEYS[5], '1')
  end
end
return out
)lua");

// Lua's unpack() is limited by the C stack; stay well below it.
constexpr size_t kMaxIdsPerCall = 1000;

}  // namespace

long long push_jobs(Redis& redis, const QueueKeys& keys, Band band, const std::vector<std::string>& ids) {
  long long waiting = -1;
  for (size_t i = 0; i < ids.size(); i += kMaxIdsPerCall) {
    const size_t end = std::min(ids.size(), i + kMaxIdsPerCall);
    std::vector<std::string> chunk(ids.begin() + static_cast<long>(i), ids.begin() + static_cast<long>(end));
    Reply r = redis.eval(kPush, {keys.list(band), keys.members(), keys.wake()}, chunk);
    if (r->type == REDIS_REPLY_INTEGER) waiting = r->integer;
  }
  return waiting;
}

long long waiting_in_redis(Redis& redis, const QueueKeys& keys) {
  Reply r = redis.command({"SCARD", keys.members()});
  return r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

std::vector<std::string> pop_jobs(Redis& redis, const QueueKeys& keys, size_t max) {
  Reply r = redis.eval(kPop,
                       {keys.list(Band::kHigh), keys.list(Band::kNormal), keys.list(Band::kLow),
                        keys.members(), keys.wake()},
                       {std::to_string(max)});
  std::vector<std::string> ids;
  ids.reserve(reply_size(r));
  for (size_t i = 0; i < reply_size(r); ++i) ids.emplace_back(r->element[i]->str, r->element[i]->len);
  return ids;
}

namespace {

std::vector<std::string> strings(const redisReply* array) {
  std::vector<std::string> out;
  if (array == nullptr || array->type != REDIS_REPLY_ARRAY) return out;
  out.reserve(array->elements);
  for (size_t i = 0; i < array->elements; ++i) out.emplace_back(array->element[i]->str, array->element[i]->len);
  return out;
}

}  // namespace

std::vector<std::string> scan_members(Redis& redis, const QueueKeys& keys, std::string& cursor, size_t count) {
  Reply r = redis.command({"SSCAN", keys.members(), cursor, "COUNT", std::to_string(count)});
  if (reply_size(r) != 2) throw RedisError("Redis SSCAN " + keys.members() + ": unexpected reply");
  cursor.assign(r->element[0]->str, r->element[0]->len);
  return strings(r->element[1]);
}

std::vector<std::string> list_ids(Redis& redis, const QueueKeys& keys, Band band, long long start, size_t count) {
  Reply r = redis.command({"LRANGE", keys.list(band), std::to_string(start),
                           std::to_string(start + static_cast<long long>(count) - 1)});
  return strings(r.get());
}

long long remove_ids(Redis& redis, const QueueKeys& keys, const std::vector<std::string>& ids) {
  if (ids.empty()) return 0;
  size_t sent = 0;
  for (const auto& id : ids) {
    for (Band b : kBandsInFetchOrder) {
      redis.append({"LREM", keys.list(b), "0", id});
      ++sent;
    }
  }
  std::vector<std::string> srem = {"SREM", keys.members()};
  srem.insert(srem.end(), ids.begin(), ids.end());
  redis.append(srem);
  ++sent;
  long long removed = 0;
  std::string error;
  for (size_t i = 0; i < sent; ++i) {  // every reply is read, so the connection stays in step
    const Reply r = redis.get_reply();
    if (r->type == REDIS_REPLY_INTEGER) removed += r->integer;
    if (r->type == REDIS_REPLY_ERROR && error.empty()) error.assign(r->str, r->len);
  }
  if (!error.empty()) throw RedisError("Redis LREM/SREM on " + keys.members() + ": " + error);
  return removed;
}

bool wait_for_jobs(Redis& redis, const std::vector<QueueKeys>& queues, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {"BLPOP"};
  for (const auto& q : queues) argv.push_back(q.wake());
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", static_cast<double>(timeout.count()) / 1000.0);
  argv.emplace_back(secs);
  redis.set_timeout(timeout + std::chrono::seconds(5));
  Reply r = redis.command(argv);
  return r->type == REDIS_REPLY_ARRAY;
}

}  // namespace jobhost
