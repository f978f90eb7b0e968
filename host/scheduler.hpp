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
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "cron.hpp"

namespace jobhost {

class Scheduler {
 public:
  explicit Scheduler(const Config& config);
  void run(std::stop_token stop);

  // The unique key of one tick of a schedule (exposed for tests).
  static std::string tick_key(const Schedule& s, std::chrono::sys_seconds tick);

 private:
  struct Entry {
    Schedule schedule;
    Cron cron;
    std::chrono::sys_seconds next;
  };
  // Enqueues one tick; throws when PostgreSQL fails (the caller retries).
  void fire(pqxx::connection& conn, Entry& e);
  std::chrono::sys_seconds first_tick(const Cron& cron, std::chrono::sys_seconds now) const;

  Config config_;
  std::vector<Entry> entries_;
};

}  // namespace jobhost
