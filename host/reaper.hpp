// reaper.hpp: stalled-job recovery. A running job whose lease expired (its host
// was killed, or stopped heartbeating) goes back to 'queued', or to 'failed'
// when that was its last attempt, so a poison pill that crashes every host
// that runs it is dead-lettered after max_attempts (invariant 4).
#pragma once

#include <stop_token>

#include <pqxx/pqxx>

#include "config.hpp"

namespace jobhost {

class Reaper {
 public:
  explicit Reaper(const Config& config) : config_(config) {}
  void run(std::stop_token stop);
  // Reaps up to one batch of expired leases; returns how many.
  size_t pass(pqxx::connection& conn);

 private:
  Config config_;
};

}  // namespace jobhost
