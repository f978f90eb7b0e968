// scheduler.hpp: the `scheduler` role. Enqueues a job for each tick of each
// `schedules:` entry (cron, UTC).
//
// Any number of hosts may run it: every tick's job carries the unique key
// "cron:<schedule hash>:<tick>", so jobhost.enqueue stores the first and the
// others find it there. Ticks missed while no scheduler ran (or PostgreSQL was
// down) are collapsed: the latest of them is fired late if it is at most
// host.scheduler.catch_up_ms old; the others are skipped, never piled up.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "cron.hpp"
#include "service.hpp"

namespace jobhost {

class Scheduler : public Service {
 public:
  explicit Scheduler(const Config& config);

  // The unique key of one tick of a schedule (exposed for tests).
  static std::string tick_key(const Schedule& s, std::chrono::sys_seconds tick);

 private:
  struct Entry {
    Schedule schedule;
    Cron cron;
    std::chrono::sys_seconds next;
  };
  bool start_up() override;
  // Sleeps until the next tick is due (a second at most), or fires it.
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  std::string failure_context() const override;
  // Enqueues one tick; throws when PostgreSQL fails (the caller retries).
  void fire(pqxx::connection& conn, Entry& e);
  std::chrono::sys_seconds first_tick(const Cron& cron, std::chrono::sys_seconds now) const;

  Config config_;
  std::vector<Entry> entries_;
  const Entry* firing_ = nullptr;  // the tick being enqueued, for failure_context
};

}  // namespace jobhost
