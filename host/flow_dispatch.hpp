// flow_dispatch.hpp: flow control in Redis (DESIGN §9), one Lua script per
// step so every limit holds atomically across all hosts.
//
// A queue with a flow: block keeps, per band, one list of ids per key and a
// ring of the keys that have jobs; a fetch takes one job from the key at the
// head of the ring and puts the key back at the tail, so keys take turns. A
// key that may not start a job now (its concurrency or rate is used up, or it
// is paused) is parked in a sorted set until it may, and skipped meanwhile:
// no worker waits for it and no attempt is used. Concurrency is counted in
// sorted sets of the running job ids, scored by when their slot lapses (the
// lease's end, pushed on by each heartbeat), so a host that dies holds its
// slots only until its leases expire. Rates are token buckets. All of it can
// be lost: limits then restart empty, and PostgreSQL still has every job.
//
// A queue without a flow: block uses the plain band lists (dispatch.hpp) and
// pays for none of this. Ids left in the plain lists when a queue gains a
// flow: block are fetched first; those left in key lists when it loses it are
// fetched after the plain lists.
#pragma once

#include <string>
#include <vector>

#include "flow.hpp"
#include "redis.hpp"
#include "routing.hpp"

namespace jobhost {

struct KeyedId {
  std::string id;
  std::string key;
};

// Pushes ids with their keys into the band's key lists and the ring. Returns
// how many ids of the queue now wait in Redis.
long long push_keyed(Redis& redis, const QueueKeys& keys, Band band, const std::vector<KeyedId>& jobs);

struct FlowFetch {
  enum class Status { kOk, kPaused, kNeedsPauseSync };
  Status status = Status::kOk;
  std::vector<KeyedId> jobs;
  // Nothing taken because of a limit: the soonest a limit lets a job start
  // (-1: no limit is waiting on time, e.g. none is full).
  long long retry_in_ms = -1;
  // Starts held back in this fetch, by limit ("concurrency", "rate",
  // "key_concurrency", "key_rate", "key_paused").
  std::vector<std::pair<std::string, long long>> throttled;
};

// Takes up to `max` ids under the queue's limits: high band first; within a
// band one id per key in turn. `flow` null: the queue has no flow: block
// (plain lists first, then whatever key lists remain, no limits). Taken ids
// hold their concurrency slots for `slot_ms`. The slots of `release` are
// given back first, in the same round trip (as release_slots does).
FlowFetch pop_flow(Redis& redis, const QueueKeys& keys, const FlowConfig* flow, size_t max, long long slot_ms,
                   const std::vector<KeyedId>& release = {});

// Gives back the slots of jobs that ended (or were never leased) and wakes
// the fetchers their slots held back.
void release_slots(Redis& redis, const QueueKeys& keys, const std::vector<KeyedId>& jobs);

// Pushes the slots of running jobs on to `slot_ms` from now (heartbeat).
void extend_slots(Redis& redis, const QueueKeys& keys, const std::vector<KeyedId>& jobs, long long slot_ms);

// Writes the queue's pause state as PostgreSQL has it (the queue, and the
// keys paused on their own), valid for a short while: fetches ask for it
// again once it lapses, so a pause written to PostgreSQL alone still takes
// effect within a second, and survives Redis losing its data.
void sync_pause(Redis& redis, const QueueKeys& keys, bool queue_paused, const std::vector<std::string>& paused_keys);

// Keys with jobs waiting in Redis (in a ring or parked), summed over bands.
long long active_keys(Redis& redis, const QueueKeys& keys);
// Of those, the keys held back now by a limit or a pause (parked).
long long held_keys(Redis& redis, const QueueKeys& keys);

// A named limiter of a handler (job.acquire). `holder` identifies the
// attempt; a concurrency slot lapses after `slot_ms`. Returns 0 when taken,
// else how long to wait (ms) before asking again.
long long acquire_limiter(Redis& redis, const std::string& prefix, const std::string& name, const Limits& limits,
                          const std::string& holder, long long slot_ms);
void release_limiters(Redis& redis, const std::string& prefix, const std::vector<std::string>& names,
                      const std::string& holder);
// Holds a limiter back for `ms` (a relay deferred us): every acquire waits.
// Also noted in the registry that read_holds reads.
void hold_limiter(Redis& redis, const std::string& prefix, const std::string& name, long long ms);
// Every hold-off in force, with the ms it has left (for FlowRuntime's copy).
std::vector<std::pair<std::string, long long>> read_holds(Redis& redis, const std::string& prefix);

}  // namespace jobhost
