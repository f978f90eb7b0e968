// worker_pool.hpp: the threads that run one plugin's handlers.
//
// A pool owns `concurrency` worker threads, a local queue of leased jobs that
// its fetcher fills no faster than workers free up, and a watchdog pass
// (supervise) that enforces the plugin's timeout: a handler past timeout_ms is
// settled as a failed attempt, flagged cancelled, and its thread is abandoned
// and replaced, so a hung plugin never shrinks the pool.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "completer.hpp"
#include "flow_dispatch.hpp"
#include "config.hpp"
#include "job_context.hpp"
#include "plugin_loader.hpp"

namespace jobhost {

// One leased attempt. Exactly one party settles it (writes its outcome): the
// worker that ran it, the watchdog, or the shutdown drain.
struct Attempt {
  jobhost_job_ctx ctx;
  std::atomic<bool> settled{false};
  std::chrono::steady_clock::time_point started;  // handler start; set and read under the pool's mu_
  int64_t started_us = 0;
};

class Fetcher;

class WorkerPool : public std::enable_shared_from_this<WorkerPool> {
 public:
  WorkerPool(std::shared_ptr<LoadedPlugin> plugin, PluginConfig plugin_config, const Config& config,
             Completer& completer, PgPool& pg_pool, FlowRuntime& flow_runtime);
  ~WorkerPool();

  void start();
  // Shutdown, first step: take no more jobs from Redis.
  void stop_fetching();
  // Shutdown, second step: hand back leased jobs that have not started; wait
  // until `deadline` for running ones; settle the rest as interrupted.
  // `why` completes "interrupted: ..." in the error of attempts cut off.
  void drain(std::chrono::steady_clock::time_point deadline,
             const std::string& why = "the host shut down before the attempt finished (shutdown_grace_ms)");

  // Enforces timeout_ms and keeps the pool at its size. Call periodically.
  void supervise();
  // Every lease this pool holds, with its handler's last progress, for the
  // lease extension.
  void held_leases(std::vector<HeldLease>& out) const;
  // Flags attempts whose lease was lost so their handlers can stop early.
  void cancel(const std::vector<std::string>& job_ids);
  // The job ids of every attempt this pool has: waiting for a worker,
  // running, or ended and being settled (a worker's slot keeps its attempt
  // until the outcome is with the completer).
  void attempt_ids(std::unordered_set<std::string>& out) const;

  // A lease statement for this pool (the fetcher's, or the migrator's direct
  // lease) failed without an answer. It may have committed all the same,
  // leaving jobs running in PostgreSQL under this pool's worker id that no
  // worker has; the lease keeper looks for them and gives them back
  // (LeaseKeeper::give_back_unanswered) instead of letting each wait for its
  // lease to expire and lose an attempt.
  void lease_answer_lost();
  // When the last such failure was (steady clock, ns); 0: none outstanding.
  int64_t lease_answer_lost_at() const { return lease_answer_lost_at_.load(); }
  // Forgets it, unless another failure came after `at`.
  void forget_lease_answer_lost(int64_t at);

  const std::string& name() const { return plugin_config_.name; }
  const LoadedPlugin& plugin() const { return *plugin_; }
  size_t size() const;
  // Attempts running now.
  size_t busy() const;
  // Sets the number of workers, within concurrency {min, max}; returns the
  // size set. Extra idle workers retire; busy ones finish their job first.
  size_t resize(size_t wanted);
  size_t target_size() const;
  // A copy: a reload may change the sizing fields meanwhile.
  PluginConfig plugin_config() const;
  // A reload changed only concurrency, scaling or flow: apply them in place.
  void set_sizing(const PluginConfig& pc);
  // The flow: block as of now (a reload may replace it meanwhile).
  std::shared_ptr<const FlowConfig> flow() const;
  uint64_t abandoned_threads() const { return abandoned_; }

  // For the fetcher: blocks until a worker is free (or stop / timeout) and
  // returns how many jobs may be leased now.
  size_t wait_for_capacity(std::stop_token stop, std::chrono::milliseconds timeout);
  // For the fetcher: a freshly leased job, validated and ready to run.
  void hand_over(LeasedJob job);
  // Freshly leased jobs: each payload is validated (a refused one is settled
  // as a permanent failure without running), then handed over.
  void take_leased(std::vector<LeasedJob> jobs);

  // For the migrator's direct lease (migrator.hpp): reserves up to `max` free
  // workers, which the fetcher then does not count as free; 0 when fetching
  // stopped, or the pool dispatches by flow: block. take_reserved ends the reservation with
  // the jobs leased for it (at most `reserved`); after a shutdown began they
  // are handed back unstarted.
  size_t reserve(size_t max);
  void take_reserved(std::vector<LeasedJob> jobs, size_t reserved);
  // Whether the pool runs jobs of `queue`.
  bool serves(const std::string& queue) const;
  // Writes the outcome of a leased job that will not run (e.g. invalid payload).
  void settle_without_running(LeasedJob job, OutcomeKind kind, std::string message);

  // Concurrency slots of ended attempts, waiting to be given back in one
  // round trip by the fetcher (its next pass comes as soon as a worker is
  // free). While the fetcher waits on Redis instead, workers give their slots
  // back themselves, at once: set_fetcher_idle(true) before that wait, then
  // flush what was queued before it.
  struct SlotRelease {
    std::string queue;
    KeyedId job;
  };
  std::vector<SlotRelease> take_slot_releases();
  void set_fetcher_idle(bool idle) { fetcher_idle_ = idle; }

 private:
  struct Slot {
    std::jthread thread;
    std::shared_ptr<Attempt> current;  // guarded by mu_
    bool abandoned = false;            // guarded by mu_
  };

  void spawn_worker();  // mu_ held
  size_t free_locked() const;  // mu_ held: workers neither busy, nor awaited by a job, nor reserved
  // Under mu_: whether to wake one waiting worker for the jobs in local_.
  bool wake_next_locked();
  void worker_loop(std::shared_ptr<Slot> slot);
  void run(Attempt& a);
  // The outcome of a failed attempt: retry with backoff, or dead-letter when
  // it was the last attempt.
  Outcome failure(const Attempt& a, std::string message, int64_t retry_after_ms);
  void settle(Attempt& a, Outcome o);
  // Gives back what the attempt held in Redis: its concurrency slot, its limiters.
  void release(jobhost_job_ctx& ctx) noexcept;
  void release_slot_now(const SlotRelease& r) noexcept;
  // Updates the job metrics for one settled attempt (run_us < 0: it never ran).
  static void count_outcome(const std::string& type, OutcomeKind kind, int64_t run_us);
  void abandon(const std::shared_ptr<Slot>& slot);  // mu_ held

  std::shared_ptr<LoadedPlugin> plugin_;
  PluginConfig plugin_config_;
  int64_t timeout_ms_;
  Completer& completer_;
  PgPool& pg_pool_;
  FlowRuntime& flow_runtime_;
  std::string key_prefix_;
  std::shared_ptr<const FlowConfig> flow_;  // guarded by mu_
  std::unique_ptr<Fetcher> fetcher_;
  std::jthread fetch_thread_;

  mutable std::mutex mu_;
  // Workers wait for local_ jobs. One waiter is woken at a time
  // (wake_pending_); a worker that takes a job and sees more wakes the next.
  // So a burst of short jobs is run by the few workers already awake instead
  // of waking one thread a job, and longer jobs still spread over every worker.
  std::condition_variable work_cv_;
  size_t waiting_ = 0;         // workers in work_cv_.wait
  bool wake_pending_ = false;  // one of them was woken and has not looked yet
  std::condition_variable_any free_cv_;  // the fetcher waits for a free worker
  std::deque<std::shared_ptr<Attempt>> local_;
  std::vector<std::shared_ptr<Slot>> slots_;  // live (not abandoned) workers
  size_t target_size_;
  size_t busy_ = 0;
  size_t reserved_ = 0;            // workers reserved for a direct lease
  bool fetching_stopped_ = false;  // stop_fetching: no more reservations
  bool stopping_ = false;
  std::atomic<uint64_t> abandoned_{0};
  std::vector<SlotRelease> slot_releases_;  // guarded by mu_
  std::atomic<bool> fetcher_idle_{false};
  std::atomic<int64_t> lease_answer_lost_at_{0};
  std::mutex rng_mu_;
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace jobhost
