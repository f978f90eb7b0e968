// flow_runtime.cpp: see flow_runtime.hpp.
#include "flow_runtime.hpp"

#include <spdlog/spdlog.h>

#include "flow_dispatch.hpp"

namespace jobhost {

namespace {

using Holds = std::unordered_map<std::string, std::chrono::steady_clock::time_point>;

// A hold only ever grows: keeps the later of two ends.
void keep_later(Holds& holds, const std::string& name, std::chrono::steady_clock::time_point end) {
  auto [it, added] = holds.emplace(name, end);
  if (!added && it->second < end) it->second = end;
}

long long ms_left(std::chrono::steady_clock::time_point end, std::chrono::steady_clock::time_point now) {
  if (end <= now) return 0;
  // Rounded up: a hold with 0.4 ms left is still a hold.
  return std::chrono::ceil<std::chrono::milliseconds>(end - now).count();
}

}  // namespace

long long FlowRuntime::held_for(const std::string& name) {
  Clock::time_point now = Clock::now();
  {
    std::unique_lock lock(holds_mu_);
    // One thread reads Redis when the copy is too old; the others wait for
    // that read rather than answer from the old copy.
    holds_read_.wait(lock, [&] { return !holds_reading_; });
    if (now - holds_read_at_ < kHoldsRefresh) {
      if (holds_failed_) return -1;
      const auto it = holds_.find(name);
      return it == holds_.end() ? 0 : ms_left(it->second, now);
    }
    holds_reading_ = true;
  }
  Holds fresh;
  bool failed = false;
  try {
    const auto holds = redis_.with([&](Redis& r) { return read_holds(r, prefix_); });
    now = Clock::now();
    for (const auto& [held, ms] : holds) fresh.emplace(held, now + std::chrono::milliseconds(ms));
  } catch (const std::exception& e) {
    failed = true;
    spdlog::warn("limiter hold-offs not read from Redis: {}", e.what());
  }
  long long left = -1;
  {
    std::lock_guard lock(holds_mu_);
    holds_reading_ = false;
    holds_read_at_ = now;
    holds_failed_ = failed;
    if (!failed) {
      // A hold this host made while the read was under way may not be in it yet.
      for (const auto& [held, end] : holds_) keep_later(fresh, held, end);
      for (auto it = fresh.begin(); it != fresh.end();) it = it->second <= now ? fresh.erase(it) : std::next(it);
      holds_ = std::move(fresh);
      const auto it = holds_.find(name);
      left = it == holds_.end() ? 0 : ms_left(it->second, now);
    }
  }
  // After the lock is released: a waiter woken while it was held would only
  // sleep again on the mutex.
  holds_read_.notify_all();
  return left;
}

void FlowRuntime::hold(const std::string& name, long long ms) {
  if (ms <= 0) return;
  {
    std::lock_guard lock(holds_mu_);
    keep_later(holds_, name, Clock::now() + std::chrono::milliseconds(ms));
  }
  redis_.with([&](Redis& r) {
    hold_limiter(r, prefix_, name, ms);
    return 0;
  });
}

}  // namespace jobhost
