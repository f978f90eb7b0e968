// scan_floor.hpp: where the reaper's and the reconciler's scans start.
//
// Both look for rows whose time column (lease_expires_at, updated_at) is
// older than a cut-off, in a partial index of one state ordered by that
// column. Each state change leaves the row's old index entry behind until
// VACUUM removes it, and while a transaction stays open (a long analytics
// query) VACUUM may remove none: a scan from the oldest entry would then step
// over every job that passed through the state since that transaction began,
// and each pass would take longer than the last (DESIGN §7, the soak).
//
// So a pass starts at a floor: where the last pass's answer shows nothing
// older can still qualify (the scanner decides, see Reaper and Reconciler),
// and every full_every, or kFullShare times as long as the last full pass
// took if that is longer, a pass without a floor finds what a floor can miss
// (a row a pass skipped because another transaction held it locked, and
// whose change was then rolled back).
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

namespace jobhost {

class ScanFloor {
 public:
  static constexpr int kFullShare = 20;
  using Clock = std::chrono::steady_clock;

  explicit ScanFloor(std::chrono::milliseconds full_every) : full_every_(full_every) {}

  // The bound for a pass beginning `now` (a timestamptz as PostgreSQL wrote
  // it), or '-infinity' when a full pass is due.
  std::string next(Clock::time_point now) {
    full_ = !floor_ || now >= full_at_;
    return full_ ? "-infinity" : *floor_;
  }
  // After the pass that began at `began`: `floor` is where the next one may
  // start (nullopt: where this one did).
  void passed(Clock::time_point began, std::optional<std::string> floor) {
    if (full_) full_at_ = began + std::max<Clock::duration>(full_every_, (Clock::now() - began) * kFullShare);
    if (floor) floor_ = std::move(floor);
  }
  // Forgets the floor: the next pass is a full one.
  void reset() { floor_.reset(); }

 private:
  std::chrono::milliseconds full_every_;
  std::optional<std::string> floor_;
  Clock::time_point full_at_{};
  bool full_ = true;
};

}  // namespace jobhost
