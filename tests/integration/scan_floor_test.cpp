// The reaper's and the reconciler's scans start at a floor (host/scan_floor.hpp),
// so that while a transaction holds VACUUM back they do not step over every
// job that ever passed through the state: what qualifies in the usual way is
// found by the bounded passes, and a row below the floor (which only a pass
// that skipped it can leave there) by the next full pass.
#include <catch2/catch.hpp>

#include <thread>

#include "dispatch.hpp"
#include "harness.hpp"
#include "job_state.hpp"
#include "reaper.hpp"
#include "reconciler.hpp"
#include "redis.hpp"

using namespace jobhost::test;
using namespace std::chrono_literals;

namespace {

const std::string kRunning(jobhost::to_text(jobhost::JobState::kRunning));
const std::string kMigrated(jobhost::to_text(jobhost::JobState::kMigratedToRedis));
const std::string kQueued(jobhost::to_text(jobhost::JobState::kQueued));

// A job running since a second ago whose lease ends at now() + `expires`.
std::string running(TestDb& db, const std::string& expires) {
  const std::string id = db.enqueue("floors");
  db.scalar("UPDATE jobhost.jobs SET status = '" + kRunning +
            "', attempt_count = 1, started_at = now() - interval '1 second', worker_id = 'w', "
            "lease_expires_at = now() + interval '" + expires + "' WHERE id = '" + id + "' RETURNING 1");
  return id;
}

// A job that has been in Redis since now() + `since` (negative), as far as
// PostgreSQL knows; Redis does not have it.
std::string migrated(TestDb& db, const std::string& since) {
  const std::string id = db.enqueue("floors");
  db.scalar("UPDATE jobhost.jobs SET status = '" + kMigrated + "', updated_at = now() + interval '" + since +
            "' WHERE id = '" + id + "' RETURNING 1");
  return id;
}

// Runs `pass` every 100 ms until it finds one row (at most 10 s); returns
// when, after `since`.
template <typename Pass>
std::chrono::steady_clock::duration passes_until_found(std::chrono::steady_clock::time_point since, Pass pass) {
  for (const auto give_up = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < give_up;) {
    if (const size_t n = pass(); n > 0) {
      CHECK(n == 1);
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  return std::chrono::steady_clock::now() - since;
}

}  // namespace

TEST_CASE("the reaper's passes start at a floor, and a full pass finds what lies below it", "[floors]") {
  TestDb db;
  jobhost::Config config;
  config.postgres_url = db.url();
  jobhost::Reaper reaper(config, 1500ms);
  const auto started = std::chrono::steady_clock::now();

  CHECK(reaper.pass(db.conn()) == 0);  // the first pass is a full one
  // A lease that runs out after that pass: the next passes find it.
  const std::string lapsing = running(db, "300 milliseconds");
  const std::string live = running(db, "1 hour");
  std::this_thread::sleep_for(400ms);
  CHECK(reaper.pass(db.conn()) == 1);
  CHECK(db.status(lapsing) == kQueued);
  CHECK(db.status(live) == kRunning);

  // A lease that ran out long before the floor (as one a pass skipped while
  // another transaction held it): the bounded passes do not look there...
  const std::string below = running(db, "-1 hour");
  CHECK(reaper.pass(db.conn()) == 0);
  CHECK(db.status(below) == kRunning);
  REQUIRE(std::chrono::steady_clock::now() - started < 1500ms);  // still before the full pass
  // ...the full pass does, and only it.
  CHECK(passes_until_found(started, [&] { return reaper.pass(db.conn()); }) >= 1500ms);
  CHECK(db.status(below) == kQueued);
  CHECK(db.status(live) == kRunning);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id IN ('" + lapsing + "', '" + below + "')") == 2);
}

TEST_CASE("the reconciler's passes start at a floor, and a full pass finds what lies below it", "[floors]") {
  TestDb db;
  jobhost::Config config;
  config.postgres_url = db.url();
  config.redis_url = db.redis_url();
  config.redis_key_prefix = db.prefix();
  config.reconciler_stale_after_ms = 1000;
  jobhost::Redis redis(db.redis_url());
  jobhost::Reconciler reconciler(config, jobhost::Reconciler::kSweepChunk, 1500ms);
  const auto started = std::chrono::steady_clock::now();

  CHECK(reconciler.pass(db.conn(), redis) == 0);  // full; the floor is its cut-off less a second
  // Moved to Redis just after that cut-off, and lost there: the next pass
  // requeues it. One Redis still has stays.
  const std::string lost = migrated(db, "-1500 milliseconds");
  const std::string kept = migrated(db, "-1500 milliseconds");
  jobhost::push_jobs(redis, jobhost::QueueKeys(db.prefix(), "floors"), jobhost::Band::kNormal, {kept});
  CHECK(reconciler.pass(db.conn(), redis) == 1);
  CHECK(db.status(lost) == kQueued);
  CHECK(db.status(kept) == kMigrated);

  // Long before the floor: not looked at until the full pass.
  const std::string below = migrated(db, "-1 hour");
  CHECK(reconciler.pass(db.conn(), redis) == 0);
  CHECK(db.status(below) == kMigrated);
  REQUIRE(std::chrono::steady_clock::now() - started < 1500ms);
  CHECK(passes_until_found(started, [&] { return reconciler.pass(db.conn(), redis); }) >= 1500ms);
  CHECK(db.status(below) == kQueued);
  CHECK(db.status(kept) == kMigrated);
}
