// stop_sleep.hpp: sleeping that a stop request cuts short.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stop_token>

namespace jobhost {

// Sleeps for `d` or until stop is requested. Returns false when stopped.
inline bool sleep_unless_stopped(std::stop_token stop, std::chrono::milliseconds d) {
  std::condition_variable_any cv;
  std::mutex mu;
  std::unique_lock lock(mu);
  cv.wait_for(lock, stop, d, [] { return false; });
  return !stop.stop_requested();
}

}  // namespace jobhost
