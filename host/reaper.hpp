// reaper.hpp: stalled-job recovery. A running job whose lease expired (its host
// was killed, or stopped heartbeating) goes back to 'queued', or to 'failed'
// when that was its last attempt, so a poison pill that crashes every host
// that runs it is dead-lettered after max_attempts (invariant 4).
#pragma once

#include <pqxx/pqxx>

#include "config.hpp"
#include "scan_floor.hpp"
#include "service.hpp"

namespace jobhost {

// Every host.reaper.interval_ms, or at once while whole batches expire.
// A pass scans jobs_lease_idx from a floor (scan_floor.hpp): leases that
// expire after the last pass's start, less a second; a full pass at least
// every kFullEvery.
class Reaper : public Service {
 public:
  static constexpr std::chrono::milliseconds kFullEvery{60000};

  // `full_every`: the longest time between full passes.
  explicit Reaper(const Config& config, std::chrono::milliseconds full_every = kFullEvery);
  // Reaps up to one batch of expired leases; returns how many.
  size_t pass(pqxx::connection& conn);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;

  std::chrono::milliseconds interval_;
  int64_t sweeps_ = -1;  // batch sweeps so far: the first, at start, looks at the members
  ScanFloor floor_;
};

}  // namespace jobhost
