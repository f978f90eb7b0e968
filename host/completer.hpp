// completer.hpp: batched writes of attempt outcomes to PostgreSQL.
//
// Workers submit outcomes and go back to work at once; one thread writes them
// in batches (one statement per batch updates the jobs and inserts one
// job_logs row per attempt). A batch that fails (PostgreSQL restarting) is
// kept and retried, so no outcome is dropped while the host runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <pqxx/pqxx>

#include "outcome.hpp"
#include "service.hpp"

namespace jobhost {

// A service (service.hpp) on a thread of its own, started by start().
class Completer : private Service {
 public:
  explicit Completer(std::string pg_url, size_t max_batch = 1000);
  ~Completer();

  void start();
  // Thread-safe; never blocks on PostgreSQL.
  void submit(Outcome o);
  // Writes everything submitted so far, trying until the deadline; then stops
  // the thread. Returns the number of outcomes left unwritten (0 normally).
  size_t flush_and_stop(std::chrono::milliseconds grace);

  // Outcomes whose guard no longer matched (the lease had moved on).
  uint64_t stale_outcomes() const { return stale_; }

  // Adds the job ids of every outcome submitted and not yet written.
  void pending_ids(std::unordered_set<std::string>& out);

  // Writes one batch of outcomes with the completer's statements, and lets
  // the batches they may have finished finish. Returns the number written;
  // throws on database errors. (Also jobctl bench --floor's completion step.)
  static size_t write(pqxx::connection& conn, const std::vector<Outcome>& batch);

 private:
  // Waits for outcomes, takes what piled up (max_batch at most) and writes it.
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  std::string failure_context() const override;

  size_t max_batch_;
  std::vector<Outcome> batch_;  // being written; kept across failed attempts; changed under mu_
  std::mutex mu_;
  std::condition_variable_any cv_;
  std::deque<Outcome> queue_;
  size_t in_flight_ = 0;
  bool draining_ = false;
  std::condition_variable_any drained_cv_;
  std::atomic<uint64_t> stale_{0};
  std::jthread thread_;
};

}  // namespace jobhost
