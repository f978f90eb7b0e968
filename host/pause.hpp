// pause.hpp: pausing a queue, or one key of it (DESIGN §9). PostgreSQL holds
// the pause (jobhost.job_queues.paused_at, jobhost.paused_keys), so it
// survives restarts of hosts and of Redis; Redis holds a copy that fetches
// check atomically and refresh from PostgreSQL twice a second
// (flow_dispatch.hpp, sync_pause), so a pause takes effect on every host
// within a second even when only PostgreSQL was told.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "redis.hpp"
#include "routing.hpp"

namespace jobhost {

struct PauseState {
  bool queue_paused = false;
  std::vector<std::string> paused_keys;
};

PauseState load_pause(pqxx::connection& conn, const std::string& queue);

// Copies the queue's pause state from PostgreSQL to Redis.
void refresh_pause(pqxx::connection& conn, Redis& redis, const QueueKeys& keys, const std::string& queue);

// Pauses (or resumes) the queue, or only `key` of it, in PostgreSQL; returns
// false when nothing changed (already so). Throws std::invalid_argument when
// `key` is given for a queue without a flow: block (no host dispatches it by key).
bool set_paused(pqxx::connection& conn, const std::string& queue, const std::optional<std::string>& key, bool paused);

}  // namespace jobhost
