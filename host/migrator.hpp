// migrator.hpp: moves ready jobs from PostgreSQL into Redis priority lists.
//
// Claims batches with FOR UPDATE SKIP LOCKED, so any number of migrators can
// run against one database without handing out a job twice. Woken by NOTIFY
// on insert; otherwise sleeps until the next run_at or poll_interval_ms.
// Only queues that a running worker host serves are migrated: jobs of an
// unknown type stay queued until a plugin for them appears. Redis holds a
// bounded window of each queue (host.migrator.max_in_redis); the backlog
// beyond it waits in PostgreSQL and is claimed high band first, so Redis
// memory does not grow with the backlog and priorities hold across it.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "flow_dispatch.hpp"
#include "lease.hpp"
#include "notify_wait.hpp"
#include "redis.hpp"
#include "service.hpp"

namespace jobhost {

// A queue some live worker host serves, and how its hosts dispatch it.
struct ServedQueue {
  std::string name;
  bool keyed = false;  // a flow: block: ids go to per-key lists in Redis
  bool fair = false;   // keys take turns in the claim too
};

// Where the plain claim's scan of each band starts (DESIGN §7, the soak).
// A claim walks jobs_ready_band_idx from the oldest run_at; each job it
// claimed leaves an index entry behind whose row version VACUUM removes only
// once no transaction may still see it, so while one stays open (a long
// analytics query) every claim would walk all the jobs claimed since it
// began: the cost of a claim grows with the traffic until the queue falls
// behind. So each claim starts kSlack before the oldest run_at the last claim
// of the band took: nothing older was ready then, except jobs whose enqueue
// is still to commit (run_at is the enqueue transaction's start), which the
// slack covers, so a claim walks at most kSlack of claimed jobs. What becomes
// ready later with an older run_at (a stalled job the reaper requeues, one
// the reconciler finds missing from Redis, a claim given back, an enqueue
// that committed more than kSlack after it began, a run_at given in the
// past) is found by a rescan every kRescan, or less often when it is slow:
// it still walks every entry left behind, so the next one waits at least
// kRescanShare times as long as it took (while a transaction is held open,
// rescans then take at most 1 / kRescanShare of a core, and those jobs wait
// longer). The migrator rescans on a thread of its own (FloorProbe), which
// only looks below the floors and lowers them to what it finds, so its claims
// never wait for a rescan; without one (rescans = true, jobctl bench --floor)
// a claim without bounds is the rescan.
class ClaimFloors {
 public:
  static constexpr std::chrono::milliseconds kRescan{2000};
  static constexpr std::chrono::microseconds kSlack{1000000};
  static constexpr int kRescanShare = 20;
  using Bounds = std::array<std::optional<int64_t>, 3>;  // run_at, µs since the epoch
  explicit ClaimFloors(bool rescans = true) : rescans_(rescans) {}
  // The bounds for the next claim, or none when a rescan is due.
  Bounds next(std::chrono::steady_clock::time_point now) {
    if (rescans_ && now >= rescan_at_) {
      rescan_at_ = now + kRescan;
      return {};
    }
    return floor_;
  }
  // A ready job of `band` found below its floor (FloorProbe): the next claim
  // starts there.
  void lower(int band, int64_t run_at_us) {
    auto& f = floor_.at(band);
    if (f && run_at_us < *f) f = run_at_us;
  }
  // After a claim without bounds that began at `began` and took `took`.
  void rescanned(std::chrono::steady_clock::time_point began, std::chrono::steady_clock::duration took) {
    rescan_at_ = began + std::max<std::chrono::steady_clock::duration>(kRescan, took * kRescanShare);
  }
  // After a claim that took jobs of `band`: the oldest run_at it took there.
  void took(int band, int64_t oldest_run_at_us) { floor_.at(band) = oldest_run_at_us - kSlack.count(); }
  const Bounds& current() const { return floor_; }
  std::chrono::steady_clock::time_point rescan_at() const {
    return rescans_ ? rescan_at_ : std::chrono::steady_clock::time_point::max();
  }

 private:
  bool rescans_;
  Bounds floor_;
  std::chrono::steady_clock::time_point rescan_at_{};
};

// What a migrator and its FloorProbe share: the floors of each plain queue's
// claims, as the migrator last left them, and the oldest ready run_at the
// probe found below them, for the migrator to lower them to.
struct FloorShare {
  std::mutex mu;
  std::map<std::string, ClaimFloors::Bounds> floors;
  std::map<std::string, ClaimFloors::Bounds> below;
};

// The migrator's rescans (ClaimFloors), on a connection and thread of their own.
class FloorProbe : public Service {
 public:
  FloorProbe(const Config& config, std::shared_ptr<FloorShare> share);
  // Looks below every floor once; returns how many bands it found jobs in.
  size_t pass(pqxx::connection& conn);

 private:
  std::chrono::milliseconds run_once(std::stop_token stop) override;

  std::shared_ptr<FloorShare> share_;
};

// The migrator's claim of a queue without a flow: block: at most `limit`
// ready jobs, higher bands first, each band from its `floors` bound; moves
// them to migrated_to_redis, records the new bounds in `floors`, and returns
// (id, priority, flow_key, band, run_at in µs since the epoch) as one
// autocommit statement. (Also jobctl bench --floor's claim.)
pqxx::result claim_plain(pqxx::connection& conn, const std::string& queue, int limit, ClaimFloors& floors);

// The same claim, leasing the jobs at once to `worker_id` for `lease_ms`
// (running, attempt counted) instead of moving them to Redis; takes nothing
// while the queue is paused.
std::vector<LeasedJob> claim_leased(pqxx::connection& conn, const std::string& queue, int limit,
                                    ClaimFloors& floors, const std::string& worker_id, int64_t lease_ms);

class WorkerPool;

// The direct lease. A job enqueued while a worker of this host waits for one
// would otherwise be claimed (one write), pushed to Redis, popped by the
// fetcher and leased (a second write) before it starts. When this host's pool
// for a queue without a flow: block has free workers and no id of the queue
// waits in Redis, the migrator reserves them and claims up to that many jobs
// with the lease itself and hands them to the pool: one write and no Redis
// round trip per job. Whatever else is ready goes to Redis as before, for
// every host. Attempts, lease guards, the reaper and graceful shutdown treat
// these leases like any other (README "How a job flows").
// host.migrator.direct_lease: false turns it off.
class Migrator : public Service {
 public:
  using Pools = std::function<std::vector<std::shared_ptr<WorkerPool>>()>;
  // `pools`: this host's active worker pools, for the direct lease (none
  // given: every job goes through Redis).
  explicit Migrator(const Config& config, Pools pools = {});
  ~Migrator() override;

  struct PassResult {
    size_t moved = 0;
    bool full = false;         // some queue had more ready than one batch
    bool window_full = false;  // some queue has max_in_redis ids waiting in Redis
    long long next_due_ms = -1;  // wait until the earliest future run_at, or -1
  };

  // One pass over every served queue.
  PassResult pass(pqxx::connection& conn, Redis& redis);

 private:
  // One pass, then the wait for a NOTIFY, the next run_at or poll_interval_ms.
  std::chrono::milliseconds run_once(std::stop_token stop) override;
  // Starts the FloorProbe.
  bool start_up() override;
  // The claims' floors (floors_) for queue, with what the probe found below them.
  ClaimFloors& floors_of(const std::string& queue);
  void pg_dropping() override;
  size_t migrate_queue(pqxx::connection& conn, Redis& redis, const ServedQueue& queue, PassResult& res);
  // Leases up to `limit` ready jobs of a plain queue to `pool`, a pool of this
  // host that serves it, for its free workers; returns how many, and whether
  // it took all it asked.
  std::pair<size_t, bool> direct_lease(pqxx::connection& conn, WorkerPool& pool, const std::string& queue,
                                       int limit);
  // The worker pool of this host that serves the queue (none without the
  // direct lease): only then is Redis asked how many of its ids wait.
  std::shared_ptr<WorkerPool> local_pool(const std::string& queue) const;
  // The fair claim of one band: keys in turn from the band's cursor, up to
  // a quota each. Appends what it claimed; returns whether more may be due
  // at once (the limit was reached, or a key filled its quota).
  bool claim_fair(pqxx::connection& conn, const std::string& queue, int band, int limit, std::vector<KeyedId>& out);

  // Where the fair claim of one queue and band goes on from.
  struct Turn {
    std::string cursor;          // the first key of the next claim (inclusive)
    size_t keys_last_round = 1;  // keys that had due jobs in the last full round
    std::set<std::string> keys_this_round;
  };

  // The served queues, read again at most every kServedRefresh (and on
  // every pass while there are none): a queue a host starts serving is
  // migrated within that time, and each wake-up costs one statement less.
  static constexpr std::chrono::milliseconds kServedRefresh{1000};
  // The next-due probe runs at most every kProbeEvery: under a steady stream
  // of NOTIFYs a pass per job would otherwise probe every time. A pass that
  // skips it wakes again when the probe is allowed, so a job that becomes due
  // without a NOTIFY (a retry, a reaped lease) waits at most this much longer.
  static constexpr std::chrono::milliseconds kProbeEvery{20};
  const std::vector<ServedQueue>& served(pqxx::connection& conn, std::chrono::steady_clock::time_point now);

  Config config_;
  Pools pools_;
  NotifyWait wake_;  // LISTEN jobhost_jobs, on a connection of its own (notify_wait.hpp)
  std::vector<ServedQueue> served_;
  std::chrono::steady_clock::time_point served_read_at_{};
  std::chrono::steady_clock::time_point probe_allowed_at_{};
  std::optional<std::chrono::steady_clock::time_point> next_due_at_;  // from the last probe
  std::unordered_map<std::string, long long> waiting_;  // per queue, last seen in Redis
  std::map<std::pair<std::string, int>, Turn> turns_;    // per queue and band
  std::unordered_map<std::string, ClaimFloors> floors_;  // per queue (plain claim)
  std::shared_ptr<FloorShare> floor_share_ = std::make_shared<FloorShare>();
  // Declared last: stopped and joined first.
  std::unique_ptr<FloorProbe> floor_probe_;
  std::jthread floor_probe_thread_;
};

// Queues served by some live worker host.
std::vector<ServedQueue> served_queues(pqxx::connection& conn);

}  // namespace jobhost
