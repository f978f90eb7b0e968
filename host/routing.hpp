// routing.hpp: which Redis list a job goes to, and the Redis key names.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace jobhost {

enum class Band { kHigh = 0, kNormal = 1, kLow = 2 };
constexpr std::array<Band, 3> kBandsInFetchOrder = {Band::kHigh, Band::kNormal, Band::kLow};

// Priorities from the seeds: <= 50 high, 51..150 normal, > 150 low. Lower runs first.
constexpr Band band_for_priority(int priority) {
  if (priority <= 50) return Band::kHigh;
  if (priority <= 150) return Band::kNormal;
  return Band::kLow;
}

constexpr std::string_view band_name(Band b) {
  switch (b) {
    case Band::kHigh: return "high";
    case Band::kNormal: return "normal";
    case Band::kLow: return "low";
  }
  return "?";
}

// Keys of one queue. The {queue} hash tag keeps them on one Redis Cluster slot,
// which the Lua scripts that touch several of them need.
class QueueKeys {
 public:
  QueueKeys(std::string_view prefix, std::string_view queue)
      : base_(std::string(prefix) + ":{" + std::string(queue) + "}:") {}

  std::string list(Band b) const { return base_ + std::string(band_name(b)); }
  // Set of job ids currently in one of the lists; lets the reconciler find
  // jobs PostgreSQL believes are in Redis but are not.
  std::string members() const { return base_ + "members"; }
  // At most one element; pushed when jobs arrive, so idle fetchers block on it.
  std::string wake() const { return base_ + "wake"; }
  // "<prefix>:{queue}:": flow control's keys (flow_dispatch.cpp) are named from it.
  const std::string& base() const { return base_; }

 private:
  std::string base_;
};

}  // namespace jobhost
