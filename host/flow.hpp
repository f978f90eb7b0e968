// flow.hpp: flow control as configured (DESIGN §9): a queue's key, its
// limits, its keys' limits, and the named limiters handlers acquire.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace jobhost {

// `limit` starts per `per_ms`, with up to `burst` at once after a quiet spell
// (a token bucket of `burst` tokens refilled at limit / per_ms).
struct RateLimit {
  int64_t limit = 0;
  int64_t per_ms = 1000;
  int64_t burst = 0;  // the bucket's size; the YAML's absent burst is `limit`
  bool operator==(const RateLimit&) const = default;
};

// Absent: no limit of that kind.
struct Limits {
  std::optional<int64_t> concurrency;
  std::optional<RateLimit> rate;
  bool any() const { return concurrency.has_value() || rate.has_value(); }
  // The fields given here, the others from `base`.
  Limits over(const Limits& base) const {
    return {concurrency ? concurrency : base.concurrency, rate ? rate : base.rate};
  }
  bool operator==(const Limits&) const = default;
};

// A plugin's flow: block; it applies to each of the plugin's queues.
struct FlowConfig {
  bool enabled = false;             // a flow: block was given: the queue dispatches by key
  std::string key_pointer;          // flow.key; "": keys only when given at enqueue
  std::vector<std::string> key_path;  // the pointer's tokens, for PostgreSQL's #>>
  bool fair = true;                 // keys take turns, in PostgreSQL and in Redis
  Limits queue;                     // all keys together, all hosts together
  Limits per_key;                   // each key separately
  std::map<std::string, Limits> overrides;  // a key's own limits (over per_key)

  Limits for_key(const std::string& key) const {
    const auto it = overrides.find(key);
    return it == overrides.end() ? per_key : it->second.over(per_key);
  }
  // Whether jobs hold slots that must be given back (a concurrency limit anywhere).
  bool counts_running() const {
    if (queue.concurrency || per_key.concurrency) return true;
    for (const auto& [k, l] : overrides) {
      if (l.concurrency) return true;
    }
    return false;
  }
  bool operator==(const FlowConfig&) const = default;
};

// A top-level limiters: entry. "relay:primary" names one limiter;
// "domain:*" is one limiter per name with that prefix.
struct LimiterConfig {
  std::string name;
  Limits limits;
  int line = 0;
  bool is_pattern() const { return !name.empty() && name.back() == '*'; }
  bool matches(std::string_view n) const {
    if (!is_pattern()) return n == name;
    const std::string_view prefix(name.data(), name.size() - 1);
    return n.size() > prefix.size() && n.substr(0, prefix.size()) == prefix;
  }
  bool operator==(const LimiterConfig&) const = default;
};

// The limiter that governs `name`: an exact entry first, then the pattern
// with the longest prefix; nullptr when none does (acquire then always succeeds).
const LimiterConfig* find_limiter(const std::vector<LimiterConfig>& limiters, std::string_view name);

// For the API and jobctl: {"concurrency": n, "rate": {"limit", "per_ms", "burst"}}, absent ones left out.
nlohmann::json limits_json(const Limits& l);
// {"key", "fair", "concurrency", "rate", "per_key", "overrides"}.
nlohmann::json flow_json(const FlowConfig& f);

// "/a/b~1c" → {"a", "b/c"} (RFC 6901). Throws std::invalid_argument naming the fault.
std::vector<std::string> parse_json_pointer(std::string_view pointer);

}  // namespace jobhost
