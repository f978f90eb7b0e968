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

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <pqxx/pqxx>

#include "config.hpp"
#include "flow_dispatch.hpp"
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

// The migrator's claim of a queue without a flow: block: $1 queue, $2 at most
// this many ready jobs, higher bands first; moves them to migrated_to_redis
// and returns (id, priority, flow_key). (Also jobctl bench --floor's claim.)
const std::string& plain_claim_sql();

class Migrator : public Service {
 public:
  explicit Migrator(const Config& config);
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
  void pg_dropping() override;
  size_t migrate_queue(pqxx::connection& conn, Redis& redis, const ServedQueue& queue, PassResult& res);
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

  Config config_;
  NotifyWait wake_;  // LISTEN jobhost_jobs, on a connection of its own (notify_wait.hpp)
  std::unordered_map<std::string, long long> waiting_;  // per queue, last seen in Redis
  std::map<std::pair<std::string, int>, Turn> turns_;    // per queue and band
};

// Queues served by some live worker host.
std::vector<ServedQueue> served_queues(pqxx::connection& conn);

}  // namespace jobhost
