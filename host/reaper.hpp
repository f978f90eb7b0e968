// reaper.hpp: stalled-job recovery. A running job whose lease expired (its host
// was killed, or stopped heartbeating) goes back to 'queued', or to 'failed'
// when that was its last attempt, so a poison pill that crashes every host
// that runs it is dead-lettered after max_attempts (invariant 4).
#pragma once

#include <pqxx/pqxx>

#include "config.hpp"
#include "service.hpp"

namespace jobhost {

// Every host.reaper.interval_ms, or at once while whole batches expire.
class Reaper : public Service {
 public:
  explicit Reaper(const Config& config);
  // Reaps up to one batch of expired leases; returns how many.
  size_t pass(pqxx::connection& conn);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;

  std::chrono::milliseconds interval_;
  int64_t sweeps_ = -1;  // batch sweeps so far: the first, at start, looks at the members
};

}  // namespace jobhost
