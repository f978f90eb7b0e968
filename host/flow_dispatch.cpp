// flow_dispatch.cpp: the Lua scripts of flow control (see flow_dispatch.hpp).
//
// Keys, all under the queue's base "<prefix>:{queue}:" (one hash tag, so one
// Redis Cluster slot):
//   k:<band>:<key>   ids of one key in one band (a list)
//   ring:<band>      keys whose list has ids, in turn order (a list)
//   parked:<band>    keys skipped until their score (ms); kPausedScore: until resumed
//   run, krun:<key>  running ids → when their slot lapses (sorted sets)
//   rate, krate:<key>  token buckets {t = tokens, ts = ms}
//   paused, pkeys, psync  the pause state copied from PostgreSQL, and its validity
// A key is in its band's ring or parked exactly while its list has ids.
#include "flow_dispatch.hpp"

#include <algorithm>
#include <cstdio>

namespace jobhost {
namespace {

// Shared by the scripts: the clock, and the band names of routing.hpp.
constexpr const char* kLuaCommon = R"lua(
local PAUSED = 1e15
local BANDS = {'high', 'normal', 'low'}
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function wake(base)
  redis.call('DEL', base .. 'wake')
  redis.call('RPUSH', base .. 'wake', '1')
end
-- Gives back the slots of the id, key pairs ARGV[from..]. Returns whether
-- that may let a fetcher start a job it could not: a key parked for want of
-- a slot went back into its ring, or the queue was at its own limit.
local function give_back(base, from)
  if from > #ARGV then return false end
  local woke = false
  local run = base .. 'run'
  local queue_counted = redis.call('EXISTS', run) == 1
  local parked_bands = {}
  for _, b in ipairs(BANDS) do
    if redis.call('EXISTS', base .. 'parked:' .. b) == 1 then parked_bands[#parked_bands + 1] = b end
  end
  for i = from, #ARGV, 2 do
    local id, key = ARGV[i], ARGV[i + 1]
    if queue_counted then redis.call('ZREM', run, id) end
    if redis.call('ZREM', base .. 'krun:' .. key, id) == 1 then
      for _, b in ipairs(parked_bands) do
        local s = redis.call('ZSCORE', base .. 'parked:' .. b, key)
        if s and tonumber(s) < PAUSED then
          redis.call('ZREM', base .. 'parked:' .. b, key)
          redis.call('RPUSH', base .. 'ring:' .. b, key)
          woke = true
        end
      end
    end
  end
  return woke or redis.call('EXISTS', base .. 'qfull') == 1
end
)lua";

std::string script(const char* body) { return std::string(kLuaCommon) + body; }

// KEYS: members. ARGV: base, band, then id, key pairs.
const RedisScript kPushKeyed(script(R"lua(
local base, band = ARGV[1], ARGV[2]
local ring, parked = base .. 'ring:' .. band, base .. 'parked:' .. band
for i = 3, #ARGV, 2 do
  local id, key = ARGV[i], ARGV[i + 1]
  if redis.call('RPUSH', base .. 'k:' .. band .. ':' .. key, id) == 1
      and not redis.call('ZSCORE', parked, key) then
    redis.call('RPUSH', ring, key)
  end
  redis.call('SADD', KEYS[1], id)
end
wake(base)
return redis.call('SCARD', KEYS[1])
)lua"));

// KEYS: members. ARGV: base, want, keyed (1: a flow: block), slot_ms,
// counts_running, then the queue's limits and the per-key limits
// (concurrency, rate limit, per_ms, burst; -1: none), then the number of
// overrides and each as key + the four, then the slots to give back first
// as id, key pairs (the fetcher's workers that ended since its last fetch:
// one round trip for both).
// Returns {status, retry_in_ms, held by concurrency, rate, key_concurrency,
// key_rate, key_paused, then id, key pairs}; status 0 ok, 1 paused, 2 the
// pause state must be synced first.
const RedisScript kPopFlow(script(R"lua(
local base = ARGV[1]
local want = tonumber(ARGV[2])
local keyed = ARGV[3] == '1'
local slot_ms = tonumber(ARGV[4])
local counts_running = ARGV[5] == '1'
local q = {conc = tonumber(ARGV[6]), limit = tonumber(ARGV[7]), per = tonumber(ARGV[8]), burst = tonumber(ARGV[9])}
local k = {conc = tonumber(ARGV[10]), limit = tonumber(ARGV[11]), per = tonumber(ARGV[12]), burst = tonumber(ARGV[13])}
local overrides = {}
local n_over = tonumber(ARGV[14])
for i = 0, n_over - 1 do
  local j = 15 + i * 5
  overrides[ARGV[j]] = {conc = tonumber(ARGV[j + 1]), limit = tonumber(ARGV[j + 2]),
                        per = tonumber(ARGV[j + 3]), burst = tonumber(ARGV[j + 4])}
end
local held = {0, 0, 0, 0, 0}
local released = give_back(base, 15 + n_over * 5)

if released then wake(base) end
if redis.call('EXISTS', base .. 'psync') == 0 then return {2, -1, 0, 0, 0, 0, 0} end
if redis.call('EXISTS', base .. 'paused') == 1 then return {1, -1, 0, 0, 0, 0, 0} end
local now = now_ms()
local retry = -1
local function soonest(ms)
  if ms >= 0 and (retry < 0 or ms < retry) then retry = ms end
end

-- Token bucket: tokens now (refilled), and the bucket's rate per ms.
local function bucket(key, lim)
  local st = redis.call('HMGET', key, 't', 'ts')
  local rate = lim.limit / lim.per
  local t = tonumber(st[1])
  if t == nil then return lim.burst, rate end
  return math.min(lim.burst, t + math.max(0, now - tonumber(st[2])) * rate), rate
end
local function bucket_store(key, tokens, rate, lim)
  redis.call('HSET', key, 't', string.format('%.6f', tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(lim.burst / rate) + 1000)
end

-- The queue's own limits bound this whole fetch.
local cap = want
if q.conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', base .. 'run', '-inf', now)
  local free = q.conc - redis.call('ZCARD', base .. 'run')
  if free <= 0 then
    -- Slots given back wake the fetchers while this lasts (kRelease).
    redis.call('SET', base .. 'qfull', '1', 'PX', slot_ms)
    held[1] = 1
    local first = redis.call('ZRANGE', base .. 'run', 0, 0, 'WITHSCORES')
    if first[2] then soonest(tonumber(first[2]) - now) end
    cap = 0
  else
    cap = math.min(cap, free)
    redis.call('DEL', base .. 'qfull')
  end
end
local q_tokens, q_rate
if q.limit >= 0 and cap > 0 then
  q_tokens, q_rate = bucket(base .. 'rate', q)
  if q_tokens < 1 then
    held[2] = 1
    soonest(math.ceil((1 - q_tokens) / q_rate))
    cap = 0
  else
    cap = math.min(cap, math.floor(q_tokens))
  end
end

local out = {}
local taken = 0
-- A key's set vanishes with its last slot given back; lapsed slots (a dead
-- host's) are dropped when the key reaches its limit.
local function take(id, key)
  out[#out + 1] = id
  out[#out + 1] = key
  taken = taken + 1
  if counts_running then
    -- The queue's set only when the queue has a limit of its own.
    if q.conc >= 0 then redis.call('ZADD', base .. 'run', now + slot_ms, id) end
    redis.call('ZADD', base .. 'krun:' .. key, now + slot_ms, id)
  end
end

-- Left in the plain lists (queued before the queue had a flow: block, or all
-- of them when it has none).
for _, b in ipairs(BANDS) do
  if taken >= cap then break end
  local got = redis.call('LPOP', base .. b, cap - taken)
  if got then for _, id in ipairs(got) do take(id, '') end end
end

local pkeys = keyed and redis.call('SCARD', base .. 'pkeys') > 0
local kcount = {}
for _, b in ipairs(BANDS) do
  if taken >= cap then break end
  local ring, parked = base .. 'ring:' .. b, base .. 'parked:' .. b
  -- Keys whose wait is over take their turn again.
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', parked, '-inf', now, 'LIMIT', 0, 256)) do
    redis.call('ZREM', parked, key)
    redis.call('RPUSH', ring, key)
  end
  -- Keys leave the ring head as many at a time as jobs are still wanted
  -- (each gives one job at most), and those with more go back to its tail
  -- together, before the next keys are taken: the same turns as one at a
  -- time, with fewer calls.
  local skipped = 0
  while taken < cap and skipped < 256 do
    local turn = redis.call('LPOP', ring, cap - taken)
    if not turn then break end
    local again = {}
    for i, key in ipairs(turn) do
      if skipped >= 256 then
        -- Not looked at: back to the head, in their order.
        for j = #turn, i, -1 do redis.call('LPUSH', ring, turn[j]) end
        break
      end
      local until_ms = nil
      if keyed then
        local lim = overrides[key] or k
        if pkeys and redis.call('SISMEMBER', base .. 'pkeys', key) == 1 then
          until_ms = PAUSED
          held[5] = held[5] + 1
        end
        if not until_ms and lim.conc >= 0 then
          local krun = base .. 'krun:' .. key
          if kcount[key] == nil then
            kcount[key] = redis.call('ZCARD', krun)
            -- Lapsed slots (a dead host's) are dropped only when they matter.
            if kcount[key] >= lim.conc then
              redis.call('ZREMRANGEBYSCORE', krun, '-inf', now)
              kcount[key] = redis.call('ZCARD', krun)
            end
          end
          if kcount[key] >= lim.conc then
            local first = redis.call('ZRANGE', krun, 0, 0, 'WITHSCORES')
            until_ms = first[2] and tonumber(first[2]) or now + slot_ms
            held[3] = held[3] + 1
          end
        end
        if not until_ms and lim.limit >= 0 then
          local tokens, rate = bucket(base .. 'krate:' .. key, lim)
          if tokens < 1 then
            until_ms = now + math.ceil((1 - tokens) / rate)
            held[4] = held[4] + 1
          else
            bucket_store(base .. 'krate:' .. key, tokens - 1, rate, lim)
          end
        end
      end
      if until_ms then
        redis.call('ZADD', parked, until_ms, key)
        skipped = skipped + 1
      else
        local list = base .. 'k:' .. b .. ':' .. key
        local id = redis.call('LPOP', list)
        if id then
          take(id, key)
          kcount[key] = (kcount[key] or 0) + 1
          if redis.call('LLEN', list) > 0 then again[#again + 1] = key end
        end
      end
    end
    if #again > 0 then redis.call('RPUSH', ring, unpack(again)) end
  end
end

if q_tokens then bucket_store(base .. 'rate', q_tokens - taken, q_rate, q) end
if taken == 0 then
  -- How long until a parked key may go (paused ones never do by themselves).
  for _, b in ipairs(BANDS) do
    local first = redis.call('ZRANGE', base .. 'parked:' .. b, 0, 0, 'WITHSCORES')
    if first[2] and tonumber(first[2]) < PAUSED then soonest(math.max(1, tonumber(first[2]) - now)) end
  end
else
  local ids = {}
  for i = 1, #out, 2 do ids[#ids + 1] = out[i] end
  redis.call('SREM', KEYS[1], unpack(ids))
  local left = 0
  for _, b in ipairs(BANDS) do
    left = left + redis.call('LLEN', base .. b) + redis.call('LLEN', base .. 'ring:' .. b)
  end
  if left > 0 then wake(base) end
end
local reply = {0, retry, held[1], held[2], held[3], held[4], held[5]}
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
)lua"));

// ARGV: base, then id, key pairs. Wakes the fetchers only when the slots
// given back may let one start a job (give_back).
const RedisScript kRelease(script(R"lua(
if give_back(ARGV[1], 2) then wake(ARGV[1]) end
return 0
)lua"));

// KEYS: run. ARGV: base, slot_ms, then id, key pairs.
const RedisScript kExtend(script(R"lua(
local base = ARGV[1]
local until_ms = now_ms() + tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i])
  redis.call('ZADD', base .. 'krun:' .. ARGV[i + 1], 'XX', until_ms, ARGV[i])
end
return 0
)lua"));

// KEYS: psync. ARGV: base, valid_ms, paused (0/1), then the paused keys.
const RedisScript kSyncPause(script(R"lua(
local base = ARGV[1]
local was_paused = redis.call('EXISTS', base .. 'paused') == 1
if ARGV[3] == '1' then redis.call('SET', base .. 'paused', '1') else redis.call('DEL', base .. 'paused') end
redis.call('DEL', base .. 'pkeys')
local paused = {}
for i = 4, #ARGV do
  redis.call('SADD', base .. 'pkeys', ARGV[i])
  paused[ARGV[i]] = true
end
-- Keys resumed: back into their rings.
local woke = was_paused and ARGV[3] ~= '1'
for _, b in ipairs(BANDS) do
  local parked = base .. 'parked:' .. b
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', parked, PAUSED, '+inf')) do
    if not paused[key] then
      redis.call('ZREM', parked, key)
      redis.call('RPUSH', base .. 'ring:' .. b, key)
      woke = true
    end
  end
end
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[2]))
if woke then wake(base) end
return 0
)lua"));

// KEYS: run, rate, hold. ARGV: holder, slot_ms, concurrency, limit, per_ms, burst (-1: none).
// Returns 0 when taken, else the ms to wait.
const RedisScript kAcquire(script(R"lua(
local now = now_ms()
local hold = redis.call('PTTL', KEYS[3])
if hold > 0 then return hold end
local conc, limit, per, burst = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if conc >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
  if redis.call('ZCARD', KEYS[1]) >= conc then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return math.max(1, math.min(1000, tonumber(first[2]) - now))
  end
end
if limit >= 0 then
  local st = redis.call('HMGET', KEYS[2], 't', 'ts')
  local rate = limit / per
  local t = tonumber(st[1])
  if t == nil then t = burst else t = math.min(burst, t + math.max(0, now - tonumber(st[2])) * rate) end
  if t < 1 then return math.ceil((1 - t) / rate) end
  redis.call('HSET', KEYS[2], 't', string.format('%.6f', t - 1), 'ts', now)
  redis.call('PEXPIRE', KEYS[2], math.ceil(burst / rate) + 1000)
end
if conc >= 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 60000)
end
return 0
)lua"));

// The registry of hold-offs, one sorted set for all names (member: the name,
// score: when the hold ends), read by every host for the names no limiter
// governs. KEYS[1] the set; ARGV[1] the name, ARGV[2] the hold (ms). A hold
// never ends sooner than one already there.
const RedisScript kNoteHold(script(R"lua(
local now = now_ms()
local ends = now + tonumber(ARGV[2])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if old == nil or old < ends then redis.call('ZADD', KEYS[1], ends, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 0
)lua"));

// The hold-offs in force: name, ms left, name, ms left, ...
const RedisScript kReadHolds(script(R"lua(
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 2, #r, 2 do r[i] = math.max(1, tonumber(r[i]) - now) end
return r
)lua"));

std::string num(long long v) { return std::to_string(v); }

void add_limits(std::vector<std::string>& argv, const Limits& l) {
  argv.push_back(num(l.concurrency.value_or(-1)));
  if (l.rate) {
    argv.push_back(num(l.rate->limit));
    argv.push_back(num(l.rate->per_ms));
    argv.push_back(num(l.rate->burst > 0 ? l.rate->burst : l.rate->limit));
  } else {
    argv.insert(argv.end(), {"-1", "1000", "-1"});
  }
}

// Lua's unpack() and the argument list stay well below their limits.
constexpr size_t kMaxPairsPerCall = 500;

template <typename F>
void in_chunks(const std::vector<KeyedId>& jobs, F&& call) {
  for (size_t i = 0; i < jobs.size(); i += kMaxPairsPerCall) {
    std::vector<std::string> pairs;
    const size_t end = std::min(jobs.size(), i + kMaxPairsPerCall);
    for (size_t j = i; j < end; ++j) {
      pairs.push_back(jobs[j].id);
      pairs.push_back(jobs[j].key);
    }
    call(pairs);
  }
}

std::string limiter_base(const std::string& prefix, const std::string& name) {
  return prefix + ":lim:{" + name + "}:";
}

}  // namespace

long long push_keyed(Redis& redis, const QueueKeys& keys, Band band, const std::vector<KeyedId>& jobs) {
  long long waiting = -1;
  in_chunks(jobs, [&](const std::vector<std::string>& pairs) {
    std::vector<std::string> argv = {keys.base(), std::string(band_name(band))};
    argv.insert(argv.end(), pairs.begin(), pairs.end());
    Reply r = redis.eval(kPushKeyed, {keys.members()}, argv);
    if (r->type == REDIS_REPLY_INTEGER) waiting = r->integer;
  });
  return waiting;
}

FlowFetch pop_flow(Redis& redis, const QueueKeys& keys, const FlowConfig* flow, size_t max, long long slot_ms,
                   const std::vector<KeyedId>& release) {
  static const FlowConfig kNone;
  const FlowConfig& f = flow != nullptr ? *flow : kNone;
  std::vector<std::string> argv = {keys.base(), num(static_cast<long long>(max)), f.enabled ? "1" : "0",
                                   num(slot_ms), f.counts_running() ? "1" : "0"};
  add_limits(argv, f.queue);
  add_limits(argv, f.per_key);
  argv.push_back(num(static_cast<long long>(f.overrides.size())));
  for (const auto& [key, limits] : f.overrides) {
    argv.push_back(key);
    add_limits(argv, limits.over(f.per_key));
  }
  // The first kMaxPairsPerCall slots go with the fetch; any beyond, before it.
  const size_t with_fetch = std::min(release.size(), kMaxPairsPerCall);
  if (with_fetch < release.size()) {
    release_slots(redis, keys, std::vector<KeyedId>(release.begin() + static_cast<long>(with_fetch), release.end()));
  }
  for (size_t i = 0; i < with_fetch; ++i) {
    argv.push_back(release[i].id);
    argv.push_back(release[i].key);
  }
  Reply r = redis.eval(kPopFlow, {keys.members()}, argv);
  FlowFetch out;
  if (reply_size(r) < 7) throw RedisError("Redis flow fetch on " + keys.base() + ": unexpected reply");
  const auto at = [&](size_t i) { return r->element[i]->integer; };
  out.status = at(0) == 1 ? FlowFetch::Status::kPaused
               : at(0) == 2 ? FlowFetch::Status::kNeedsPauseSync
                            : FlowFetch::Status::kOk;
  out.retry_in_ms = at(1);
  static const char* kHeld[] = {"concurrency", "rate", "key_concurrency", "key_rate", "key_paused"};
  for (size_t i = 0; i < 5; ++i) {
    if (at(2 + i) > 0) out.throttled.emplace_back(kHeld[i], at(2 + i));
  }
  for (size_t i = 7; i + 1 < r->elements; i += 2) {
    out.jobs.push_back({std::string(r->element[i]->str, r->element[i]->len),
                        std::string(r->element[i + 1]->str, r->element[i + 1]->len)});
  }
  return out;
}

void release_slots(Redis& redis, const QueueKeys& keys, const std::vector<KeyedId>& jobs) {
  in_chunks(jobs, [&](const std::vector<std::string>& pairs) {
    std::vector<std::string> argv = {keys.base()};
    argv.insert(argv.end(), pairs.begin(), pairs.end());
    redis.eval(kRelease, {}, argv);
  });
}

void extend_slots(Redis& redis, const QueueKeys& keys, const std::vector<KeyedId>& jobs, long long slot_ms) {
  in_chunks(jobs, [&](const std::vector<std::string>& pairs) {
    std::vector<std::string> argv = {keys.base(), num(slot_ms)};
    argv.insert(argv.end(), pairs.begin(), pairs.end());
    redis.eval(kExtend, {keys.base() + "run"}, argv);
  });
}

void sync_pause(Redis& redis, const QueueKeys& keys, bool queue_paused, const std::vector<std::string>& paused_keys) {
  // Fetches ask PostgreSQL again after this long.
  constexpr long long kValidMs = 500;
  std::vector<std::string> argv = {keys.base(), num(kValidMs), queue_paused ? "1" : "0"};
  argv.insert(argv.end(), paused_keys.begin(), paused_keys.end());
  redis.eval(kSyncPause, {keys.base() + "psync"}, argv);
}

long long active_keys(Redis& redis, const QueueKeys& keys) {
  long long n = 0;
  for (Band b : kBandsInFetchOrder) {
    const std::string band(band_name(b));
    redis.append({"LLEN", keys.base() + "ring:" + band});
    redis.append({"ZCARD", keys.base() + "parked:" + band});
  }
  for (int i = 0; i < 6; ++i) {
    const Reply r = redis.get_reply();
    if (r->type == REDIS_REPLY_INTEGER) n += r->integer;
  }
  return n;
}

long long held_keys(Redis& redis, const QueueKeys& keys) {
  for (Band b : kBandsInFetchOrder) redis.append({"ZCARD", keys.base() + "parked:" + std::string(band_name(b))});
  long long n = 0;
  for (int i = 0; i < 3; ++i) {
    const Reply r = redis.get_reply();
    if (r->type == REDIS_REPLY_INTEGER) n += r->integer;
  }
  return n;
}

long long acquire_limiter(Redis& redis, const std::string& prefix, const std::string& name, const Limits& limits,
                          const std::string& holder, long long slot_ms) {
  const std::string base = limiter_base(prefix, name);
  std::vector<std::string> argv = {holder, num(slot_ms)};
  add_limits(argv, limits);
  Reply r = redis.eval(kAcquire, {base + "run", base + "rate", base + "hold"}, argv);
  return r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

void release_limiters(Redis& redis, const std::string& prefix, const std::vector<std::string>& names,
                      const std::string& holder) {
  for (const auto& name : names) redis.append({"ZREM", limiter_base(prefix, name) + "run", holder});
  for (size_t i = 0; i < names.size(); ++i) redis.get_reply();
}

void hold_limiter(Redis& redis, const std::string& prefix, const std::string& name, long long ms) {
  if (ms <= 0) return;
  // The limiter's own key, for its acquire script; the registry, for the
  // hosts' copies (names no limiter governs). Two keys, two slots.
  redis.command({"SET", limiter_base(prefix, name) + "hold", "1", "PX", num(ms)});
  redis.eval(kNoteHold, {prefix + ":lim:holds"}, {name, num(ms)});
}

std::vector<std::pair<std::string, long long>> read_holds(Redis& redis, const std::string& prefix) {
  Reply r = redis.eval(kReadHolds, {prefix + ":lim:holds"}, {});
  if (r->type == REDIS_REPLY_ERROR) throw RedisError("Redis hold-offs: " + std::string(r->str, r->len));
  std::vector<std::pair<std::string, long long>> out;
  for (size_t i = 0; i + 1 < reply_size(r); i += 2) {
    out.emplace_back(std::string(r->element[i]->str, r->element[i]->len), r->element[i + 1]->integer);
  }
  return out;
}

}  // namespace jobhost
