// worker_pool.cpp: worker threads, the timeout watchdog and the shutdown drain.
#include "worker_pool.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "fetcher.hpp"
#include "metrics.hpp"

namespace jobhost {

WorkerPool::WorkerPool(std::shared_ptr<LoadedPlugin> plugin, PluginConfig plugin_config,
                       const Config& config, Completer& completer, PgPool& pg_pool, FlowRuntime& flow_runtime)
    : plugin_(std::move(plugin)),
      plugin_config_(std::move(plugin_config)),
      timeout_ms_(plugin_config_.timeout_ms),
      completer_(completer),
      pg_pool_(pg_pool),
      flow_runtime_(flow_runtime),
      key_prefix_(config.redis_key_prefix),
      flow_(std::make_shared<const FlowConfig>(plugin_config_.flow)),
      fetcher_(std::make_unique<Fetcher>(*this, config, plugin_->job_types())),
      // With a scaling rule the pool starts small and grows on demand; without
      // one it runs concurrency.max workers throughout.
      target_size_(static_cast<size_t>(std::max(
          1, plugin_config_.scaling ? plugin_config_.concurrency_min : plugin_config_.concurrency_max))) {}

WorkerPool::~WorkerPool() {
  stop_fetching();
  std::lock_guard lock(mu_);
  stopping_ = true;
  work_cv_.notify_all();
  for (auto& s : slots_) {
    if (s->thread.joinable() && s->thread.get_id() == std::this_thread::get_id()) s->thread.detach();
  }
}

void WorkerPool::start() {
  {
    std::lock_guard lock(mu_);
    while (slots_.size() < target_size_) spawn_worker();
  }
  fetch_thread_ = std::jthread([self = shared_from_this()](std::stop_token st) { self->fetcher_->run(st); });
}

void WorkerPool::spawn_worker() {
  auto slot = std::make_shared<Slot>();
  slots_.push_back(slot);
  slot->thread = std::jthread([self = shared_from_this(), slot] { self->worker_loop(slot); });
}

size_t WorkerPool::resize(size_t wanted) {
  std::lock_guard lock(mu_);
  const size_t lo = static_cast<size_t>(std::max(1, plugin_config_.concurrency_min));
  const size_t hi = static_cast<size_t>(std::max(plugin_config_.concurrency_min, plugin_config_.concurrency_max));
  if (stopping_) return target_size_;
  target_size_ = std::clamp(wanted, lo, hi);
  while (slots_.size() < target_size_) spawn_worker();
  work_cv_.notify_all();  // idle workers beyond the target retire
  free_cv_.notify_all();
  return target_size_;
}

void WorkerPool::set_sizing(const PluginConfig& pc) {
  {
    std::lock_guard lock(mu_);
    plugin_config_.concurrency_min = pc.concurrency_min;
    plugin_config_.concurrency_max = pc.concurrency_max;
    plugin_config_.scaling = pc.scaling;
    plugin_config_.scaling_queue_depth_above = pc.scaling_queue_depth_above;
    plugin_config_.scaling_memory_percent_above = pc.scaling_memory_percent_above;
    plugin_config_.scaling_idle_ms = pc.scaling_idle_ms;
    plugin_config_.flow = pc.flow;
    flow_ = std::make_shared<const FlowConfig>(pc.flow);
  }
  // Without scaling the pool runs max; with it, the current size is kept
  // within the new bounds and the autoscaler takes it from there.
  resize(pc.scaling ? target_size() : static_cast<size_t>(pc.concurrency_max));
}

std::shared_ptr<const FlowConfig> WorkerPool::flow() const {
  std::lock_guard lock(mu_);
  return flow_;
}

PluginConfig WorkerPool::plugin_config() const {
  std::lock_guard lock(mu_);
  return plugin_config_;
}

size_t WorkerPool::target_size() const {
  std::lock_guard lock(mu_);
  return target_size_;
}

size_t WorkerPool::busy() const {
  std::lock_guard lock(mu_);
  return busy_;
}

size_t WorkerPool::size() const {
  std::lock_guard lock(mu_);
  return slots_.size();
}

void WorkerPool::stop_fetching() {
  {
    std::lock_guard lock(mu_);
    fetching_stopped_ = true;
  }
  if (fetch_thread_.joinable()) {
    fetch_thread_.request_stop();
    free_cv_.notify_all();
    fetch_thread_.join();
  }
  // No fetcher gives slots back from now on: attempts ending later do it
  // themselves, and what was queued goes now.
  fetcher_idle_ = true;
  for (const auto& r : take_slot_releases()) release_slot_now(r);
}

size_t WorkerPool::free_locked() const {
  const size_t taken = busy_ + local_.size() + reserved_;
  const size_t workers = std::min(slots_.size(), target_size_);
  return workers > taken ? workers - taken : 0;
}

size_t WorkerPool::wait_for_capacity(std::stop_token stop, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  free_cv_.wait_for(lock, stop, timeout, [&] { return stopping_ || free_locked() > 0; });
  return stopping_ ? 0 : free_locked();
}

size_t WorkerPool::reserve(size_t max) {
  std::lock_guard lock(mu_);
  if (fetching_stopped_ || stopping_ || (flow_ && flow_->enabled)) return 0;
  const size_t n = std::min(max, free_locked());
  reserved_ += n;
  return n;
}

void WorkerPool::take_reserved(std::vector<LeasedJob> jobs, size_t reserved) {
  bool stopping = false;
  {
    std::lock_guard lock(mu_);
    reserved_ -= std::min(reserved, reserved_);
    stopping = stopping_;
  }
  // Workers reserved and not used are free again.
  if (jobs.size() < reserved) free_cv_.notify_all();
  if (!stopping) {
    take_leased(std::move(jobs));
    return;
  }
  // The drain has collected the unstarted jobs already: these go back too.
  for (LeasedJob& job : jobs) settle_without_running(std::move(job), outcome_for(AttemptEnd::kHandedBack, false), {});
}

bool WorkerPool::serves(const std::string& queue) const {
  const auto& types = plugin_->job_types();
  return std::find(types.begin(), types.end(), queue) != types.end();
}

void WorkerPool::take_leased(std::vector<LeasedJob> jobs) {
  for (LeasedJob& job : jobs) {
    if (std::string bad = plugin().validate(job.type, job.payload); !bad.empty()) {
      settle_without_running(std::move(job), outcome_for(AttemptEnd::kFailedPermanently, false),
                             "invalid payload: " + bad);
      continue;
    }
    hand_over(std::move(job));
  }
}

void WorkerPool::hand_over(LeasedJob job) {
  auto a = std::make_shared<Attempt>();
  a->ctx.job = std::move(job);
  a->ctx.pool = &pg_pool_;
  a->ctx.flow = &flow_runtime_;
  a->ctx.limiter_slot_ms = timeout_ms_ + 5000;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    local_.push_back(std::move(a));
    wake = wake_next_locked();
  }
  if (wake) work_cv_.notify_one();
}

bool WorkerPool::wake_next_locked() {
  if (local_.empty() || waiting_ == 0 || wake_pending_) return false;
  wake_pending_ = true;
  return true;
}

void WorkerPool::settle_without_running(LeasedJob job, OutcomeKind kind, std::string message) {
  const int64_t now = now_us();
  count_outcome(job.type, kind, -1);
  {
    jobhost_job_ctx ctx;
    ctx.job = job;
    release(ctx);
  }
  completer_.submit({std::move(job.id), job.attempt, kind, 0, std::move(message), now, now});
}

void WorkerPool::worker_loop(std::shared_ptr<Slot> slot) {
  // The attempt this worker ran last, until it is counted out: in the same
  // critical section that takes the next job, so one lock of mu_ per job, not
  // two (256 email workers queued on it).
  std::shared_ptr<Attempt> ended;
  for (;;) {
    std::shared_ptr<Attempt> a;
    bool wake = false;
    {
      std::unique_lock lock(mu_);
      if (ended) {
        if (slot->abandoned) return;  // the watchdog settled it and replaced us
        slot->current.reset();
        --busy_;
        if (local_.empty()) {
          // Going idle: whoever waits for a free worker (the fetcher, a
          // drain) learns of it before this one sleeps.
          lock.unlock();
          free_cv_.notify_all();
          ended.reset();
          lock.lock();
        }
      }
      const auto ready = [&] {
        return !local_.empty() || stopping_ || slot->abandoned || slots_.size() > target_size_;
      };
      if (!ready()) {
        ++waiting_;
        // Every return from wait clears wake_pending_, also one that finds
        // nothing to do (the jobs went to a worker already awake): else no
        // one would be woken again.
        do {
          work_cv_.wait(lock);
          wake_pending_ = false;
        } while (!ready());
        --waiting_;
      }
      if (slot->abandoned) return;
      if (local_.empty() && slots_.size() > target_size_ && !stopping_) {
        // The pool shrank: this idle worker retires. Its thread cannot join
        // itself, so it detaches; `self` in its closure keeps the plugin loaded.
        slots_.erase(std::remove(slots_.begin(), slots_.end(), slot), slots_.end());
        slot->thread.detach();
        return;
      }
      if (local_.empty()) return;
      a = std::move(local_.front());
      local_.pop_front();
      // Stamped under mu_, before the watchdog can see the attempt: it reads
      // `started` under mu_ too, and an unset start would look 50 years old.
      a->started = std::chrono::steady_clock::now();
      a->started_us = now_us();
      slot->current = a;
      ++busy_;
      wake = wake_next_locked();
    }
    if (wake) work_cv_.notify_one();
    if (ended) {
      free_cv_.notify_all();  // a worker's worth of room: one attempt ended, one waiting job began
      ended.reset();
    }
    run(*a);
    ended = std::move(a);
  }
}

void WorkerPool::run(Attempt& a) {
  const jobhost_job job = c_job(a.ctx);
  int64_t retry_after_ms = -1;
  const int32_t code = plugin_->handle(job, &a.ctx, &retry_after_ms);
  std::string error;
  {
    std::lock_guard lock(a.ctx.error_mu);
    error = a.ctx.error;
  }
  Outcome o;
  switch (code) {
    case JOBHOST_OK:
      o = {a.ctx.job.id, a.ctx.job.attempt, outcome_for(AttemptEnd::kSucceeded, false), 0, {}, a.started_us,
           now_us()};
      break;
    case JOBHOST_PERMANENT:
      o = {a.ctx.job.id, a.ctx.job.attempt, outcome_for(AttemptEnd::kFailedPermanently, false), 0,
           error.empty() ? "permanent failure (no message)" : error, a.started_us, now_us()};
      break;
    case JOBHOST_RETRY:
      o = failure(a, error.empty() ? "failed (no message)" : error, retry_after_ms);
      break;
    case JOBHOST_THROTTLED:
      // Defined by ABI 1.2: from an older plugin it is an unknown value.
      if (plugin_->info().abi_minor >= 2) {
        o = {a.ctx.job.id, a.ctx.job.attempt, OutcomeKind::kThrottle, std::max<int64_t>(0, retry_after_ms),
             error.empty() ? std::string(kThrottledLog) : error, a.started_us, now_us()};
        break;
      }
      [[fallthrough]];
    default:
      o = failure(a, "plugin returned unknown outcome " + std::to_string(code), -1);
  }
  settle(a, std::move(o));
}

Outcome WorkerPool::failure(const Attempt& a, std::string message, int64_t retry_after_ms) {
  const LeasedJob& j = a.ctx.job;
  const int64_t started = a.started_us != 0 ? a.started_us : now_us();
  const OutcomeKind kind = outcome_for(AttemptEnd::kFailed, is_last_attempt(j.attempt, j.max_attempts));
  if (kind == OutcomeKind::kFailed) {
    return {j.id, j.attempt, kind, 0,
            "attempt " + std::to_string(j.attempt) + " of " + std::to_string(j.max_attempts) +
                " failed, no attempts left: " + message,
            started, now_us()};
  }
  int64_t delay = retry_after_ms;
  if (delay < 0) {
    std::lock_guard lock(rng_mu_);
    delay = backoff_delay_ms(plugin_->retry(), j.attempt, rng_);
  }
  return {j.id, j.attempt, kind, delay, std::move(message), started, now_us()};
}

std::vector<WorkerPool::SlotRelease> WorkerPool::take_slot_releases() {
  std::lock_guard lock(mu_);
  return std::exchange(slot_releases_, {});
}

void WorkerPool::release_slot_now(const SlotRelease& r) noexcept {
  try {
    const QueueKeys keys(key_prefix_, r.queue);
    flow_runtime_.redis().with([&](Redis& redis) {
      release_slots(redis, keys, {r.job});
      return 0;
    });
  } catch (const std::exception& e) {
    spdlog::warn("job {}: its concurrency slot was not given back ({}); it lapses with the lease", r.job.id,
                 e.what());
  }
}

void WorkerPool::release(jobhost_job_ctx& ctx) noexcept {
  release_attempt_limiters(ctx);
  if (!ctx.job.slot_key) return;
  SlotRelease r{ctx.job.type, {ctx.job.id, *ctx.job.slot_key}};
  if (!fetcher_idle_) {
    try {
      std::lock_guard lock(mu_);
      slot_releases_.push_back(std::move(r));
      return;  // the fetcher, woken by the worker that frees up, gives it back
    } catch (...) {
      // Out of memory: give it back here and now.
    }
  }
  release_slot_now(r);
}

void WorkerPool::settle(Attempt& a, Outcome o) {
  if (a.settled.exchange(true)) return;  // someone else already wrote this attempt
  release(a.ctx);
  count_outcome(a.ctx.job.type, o.kind, o.finished_us - o.started_us);
  if (o.kind != OutcomeKind::kCompleted) {
    spdlog::info("job {} type={} attempt={}/{}: {} ({})", o.job_id, a.ctx.job.type, o.attempt,
                 a.ctx.job.max_attempts, outcome_status(o.kind), o.message);
  } else {
    spdlog::debug("job {} type={} attempt={}: completed", o.job_id, a.ctx.job.type, o.attempt);
  }
  completer_.submit(std::move(o));
}

void WorkerPool::count_outcome(const std::string& type, OutcomeKind kind, int64_t run_us) {
  Metrics& m = Metrics::global();
  const Metrics::Labels queue{{"queue", type}};
  switch (kind) {
    case OutcomeKind::kCompleted: m.inc("jobs_completed_total", queue); break;
    case OutcomeKind::kFailed: m.inc("jobs_failed_total", queue); break;
    case OutcomeKind::kRetry: m.inc("jobs_retried_total", queue); break;
    case OutcomeKind::kThrottle: m.inc("flow_throttled_total", {{"queue", type}, {"limit", "handler"}}); return;
    case OutcomeKind::kHandBack: return;  // never ran
  }
  if (run_us >= 0) m.observe("job_duration_seconds", queue, static_cast<double>(run_us) / 1e6);
}

void WorkerPool::abandon(const std::shared_ptr<Slot>& slot) {
  slot->abandoned = true;
  slot->thread.detach();  // it may never return; it keeps the plugin loaded
  slots_.erase(std::remove(slots_.begin(), slots_.end(), slot), slots_.end());
  --busy_;
  ++abandoned_;
}

void WorkerPool::supervise() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Attempt>> timed_out;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    for (const auto& slot : std::vector(slots_)) {
      const auto& a = slot->current;
      if (!a || now - a->started < std::chrono::milliseconds(timeout_ms_)) continue;
      a->ctx.cancelled = true;
      timed_out.push_back(a);
      abandon(slot);
    }
    while (slots_.size() < target_size_) spawn_worker();
  }
  for (const auto& a : timed_out) {
    spdlog::warn("job {} type={} attempt={}: handler still running after timeout_ms={}; "
                 "abandoning its thread and starting a new worker",
                 a->ctx.job.id, a->ctx.job.type, a->ctx.job.attempt, timeout_ms_);
    settle(*a, failure(*a, "timed out after " + std::to_string(timeout_ms_) + " ms (timeout_ms)", -1));
  }
  if (!timed_out.empty()) free_cv_.notify_all();
}

void WorkerPool::held_leases(std::vector<HeldLease>& out) const {
  std::lock_guard lock(mu_);
  for (const auto& a : local_) out.push_back({a->ctx.job.id, a->ctx.job.attempt, -1.0, a->ctx.job.type, a->ctx.job.slot_key});
  for (const auto& s : slots_) {
    if (s->current && !s->current->settled) {
      const auto& j = s->current->ctx.job;
      out.push_back({j.id, j.attempt, s->current->ctx.progress.load(), j.type, j.slot_key});
    }
  }
}

void WorkerPool::attempt_ids(std::unordered_set<std::string>& out) const {
  std::lock_guard lock(mu_);
  for (const auto& a : local_) out.insert(a->ctx.job.id);
  for (const auto& s : slots_) {
    if (s->current) out.insert(s->current->ctx.job.id);
  }
}

void WorkerPool::lease_answer_lost() {
  const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  lease_answer_lost_at_.store(std::max<int64_t>(now, 1));
}

void WorkerPool::forget_lease_answer_lost(int64_t at) {
  lease_answer_lost_at_.compare_exchange_strong(at, 0);
}

void WorkerPool::cancel(const std::vector<std::string>& job_ids) {
  std::lock_guard lock(mu_);
  for (const auto& s : slots_) {
    if (s->current && std::find(job_ids.begin(), job_ids.end(), s->current->ctx.job.id) != job_ids.end()) {
      s->current->ctx.cancelled = true;
    }
  }
}

void WorkerPool::drain(std::chrono::steady_clock::time_point deadline, const std::string& why) {
  stop_fetching();
  std::vector<std::shared_ptr<Attempt>> unstarted;
  std::vector<std::shared_ptr<Attempt>> interrupted;
  std::vector<std::shared_ptr<Slot>> finished;
  {
    std::unique_lock lock(mu_);
    stopping_ = true;
    unstarted.assign(local_.begin(), local_.end());
    local_.clear();
    work_cv_.notify_all();
    free_cv_.wait_until(lock, deadline, [&] { return busy_ == 0; });
    for (const auto& slot : std::vector(slots_)) {
      if (slot->current) {
        slot->current->ctx.cancelled = true;
        interrupted.push_back(slot->current);
        abandon(slot);
      }
    }
    finished.swap(slots_);
  }
  for (const auto& a : unstarted) {
    const int64_t now = now_us();
    settle(*a, {a->ctx.job.id, a->ctx.job.attempt, outcome_for(AttemptEnd::kHandedBack, false), 0, {}, now, now});
  }
  for (const auto& a : interrupted) {
    settle(*a, failure(*a, "interrupted: " + why, -1));
  }
  for (auto& s : finished) {
    if (s->thread.joinable()) s->thread.join();
  }
  if (!unstarted.empty() || !interrupted.empty()) {
    spdlog::info("pool {}: handed back {} unstarted jobs, interrupted {} running ones", name(),
                 unstarted.size(), interrupted.size());
  }
}

}  // namespace jobhost
