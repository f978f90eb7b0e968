// scheduler.cpp: cron ticks to jobs, once each however many schedulers run.
#include "scheduler.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <memory>

#include <spdlog/spdlog.h>

#include "pg.hpp"

namespace jobhost {
namespace {

using namespace std::chrono;

// The job is enqueued in a transaction of its own so that created_at = now()
// tells a row this call inserted from one another scheduler inserted first.
// Two statements: the row a function inserts is not visible to the statement
// that called it.
constexpr const char* kTickEnqueueSql =
    "SELECT jobhost.enqueue(job_type => $1, payload => $2::jsonb, run_at => $3::timestamptz, "
    "unique_key => $4)::text";
constexpr const char* kTickInsertedSql = "SELECT created_at = now() FROM jobhost.jobs WHERE id = $1::uuid";

std::string iso(sys_seconds t) {
  const std::time_t tt = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char out[32];
  std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return out;
}

// FNV-1a: a stable name for a schedule that changes when its meaning does.
std::string schedule_hash(const Schedule& s) {
  uint64_t h = 1469598103934665603ull;
  for (const std::string* part : {&s.job_type, &s.cron, &s.payload_json}) {
    for (const unsigned char c : *part) {
      h ^= c;
      h *= 1099511628211ull;
    }
    h ^= 0xff;  // separator, so ("ab", "c") and ("a", "bc") differ
    h *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

sys_seconds now_seconds() { return floor<seconds>(system_clock::now()); }

}  // namespace

std::string Scheduler::tick_key(const Schedule& s, sys_seconds tick) {
  return "cron:" + schedule_hash(s) + ":" + iso(tick);
}

// The tick to fire first: the latest one at most catch_up old, else the next.
sys_seconds Scheduler::first_tick(const Cron& cron, sys_seconds now) const {
  const sys_seconds oldest = now - duration_cast<seconds>(milliseconds(config_.scheduler_catch_up_ms));
  sys_seconds tick = cron.next_after(oldest - seconds(1));
  if (tick > now) return tick;
  for (sys_seconds later = cron.next_after(tick); later <= now; later = cron.next_after(later)) tick = later;
  return tick;
}

Scheduler::Scheduler(const Config& config)
    : Service({.name = "scheduler",
               .postgres_url = config.postgres_url,
               .redis_url = {},
               .first_pass_after = std::chrono::milliseconds(0),
               .backoff = milliseconds(1000),
               .max_backoff = milliseconds(5000)}),
      config_(config) {
  const sys_seconds now = now_seconds();
  for (const Schedule& s : config_.schedules) {
    Cron cron = Cron::parse(s.cron);
    const sys_seconds first = first_tick(cron, now);
    entries_.push_back(Entry{s, std::move(cron), first});
  }
}

void Scheduler::fire(pqxx::connection& conn, Entry& e) {
  const std::string key = tick_key(e.schedule, e.next);
  pqxx::work tx(conn);
  const std::string id =
      tx.exec_params1(kTickEnqueueSql, e.schedule.job_type, e.schedule.payload_json, iso(e.next), key)[0].c_str();
  const bool inserted = tx.exec_params1(kTickInsertedSql, id)[0].as<bool>();
  tx.commit();
  if (inserted) {
    spdlog::info("schedule {} \"{}\": tick {} enqueued job {}", e.schedule.job_type, e.schedule.cron,
                 iso(e.next), id);
  } else {
    spdlog::debug("schedule {} \"{}\": tick {} was already enqueued (job {})", e.schedule.job_type,
                  e.schedule.cron, iso(e.next), id);
  }
}

bool Scheduler::start_up() {
  if (entries_.empty()) {
    spdlog::info("scheduler: no schedules in the config");
    return false;
  }
  for (const Entry& e : entries_) {
    spdlog::info("scheduler: {} \"{}\" UTC, next tick {}", e.schedule.job_type, e.schedule.cron, iso(e.next));
  }
  return true;
}

std::string Scheduler::failure_context() const {
  if (firing_ == nullptr) return {};
  return "tick " + iso(firing_->next) + " of " + firing_->schedule.job_type + " not enqueued yet";
}

std::chrono::milliseconds Scheduler::run_once(std::stop_token) {
  firing_ = nullptr;
  auto due = std::min_element(entries_.begin(), entries_.end(),
                              [](const Entry& a, const Entry& b) { return a.next < b.next; });
  const auto wait = due->next - system_clock::now();
  if (wait > milliseconds(0)) {
    // At most a second at a time, so a clock that is set back or forward is
    // noticed within a second.
    return std::min(ceil<milliseconds>(wait), milliseconds(1000));
  }
  firing_ = &*due;
  fire(pg(), *due);
  // Ticks missed meanwhile (PostgreSQL was down, the process stalled) are
  // collapsed into the latest, as at start-up.
  const sys_seconds now = now_seconds();
  const sys_seconds next = due->cron.next_after(due->next);
  due->next = next > now ? next : first_tick(due->cron, now);
  if (due->next != next) {
    spdlog::warn("schedule {} \"{}\": skipped the missed ticks from {} to before {}", due->schedule.job_type,
                 due->schedule.cron, iso(next), iso(due->next));
  }
  return milliseconds(0);
}

}  // namespace jobhost
