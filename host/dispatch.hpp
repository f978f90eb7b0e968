// dispatch.hpp: putting job ids into a queue's Redis priority lists and taking
// them out, atomically with the queue's membership set and wake-up key.
#pragma once

#include <string>
#include <vector>

#include "redis.hpp"
#include "routing.hpp"

namespace jobhost {

// Appends ids to the band's list, records them as members, and wakes one
// blocked fetcher. Returns how many ids of the queue now wait in Redis.
long long push_jobs(Redis& redis, const QueueKeys& keys, Band band, const std::vector<std::string>& ids);

// How many ids of the queue wait in Redis (pushed, not yet taken by a fetcher).
long long waiting_in_redis(Redis& redis, const QueueKeys& keys);

// Takes up to `max` ids, high band first, then normal, then low. Wakes another
// fetcher if jobs remain.
std::vector<std::string> pop_jobs(Redis& redis, const QueueKeys& keys, size_t max);

// Blocks up to `timeout` for a wake-up on any of the queues. Returns true when woken.
bool wait_for_jobs(Redis& redis, const std::vector<QueueKeys>& queues, std::chrono::milliseconds timeout);

// For checking Redis against PostgreSQL, a chunk at a time (never KEYS or a
// whole key at once). One SSCAN step over the queue's membership set about
// `count` ids long, from `cursor`, which it advances ("0" again: the scan is
// complete).
std::vector<std::string> scan_members(Redis& redis, const QueueKeys& keys, std::string& cursor, size_t count);
// Up to `count` ids of a band's list from position `start` (0: the next one a
// fetcher takes).
std::vector<std::string> list_ids(Redis& redis, const QueueKeys& keys, Band band, long long start, size_t count);
// Removes every copy of each id from the queue's three lists and from its
// membership set, in one round trip. Returns the number of entries removed.
long long remove_ids(Redis& redis, const QueueKeys& keys, const std::vector<std::string>& ids);

}  // namespace jobhost
