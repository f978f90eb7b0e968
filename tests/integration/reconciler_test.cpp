// The reconciler's orphan sweep: ids in a queue's Redis lists and membership
// set whose job is not waiting in Redis according to PostgreSQL are removed,
// a chunk per key and pass; live ids stay.
#include <catch2/catch.hpp>

#include "dispatch.hpp"
#include "harness.hpp"
#include "job_state.hpp"
#include "reconciler.hpp"
#include "redis.hpp"
#include "routing.hpp"

using namespace jobhost::test;
using jobhost::Band;

namespace {

// A job of the queue in the given state.
std::string job_in(TestDb& db, const std::string& queue, jobhost::JobState s) {
  const std::string id = db.enqueue(queue);
  db.scalar("UPDATE jobhost.jobs SET status = '" + std::string(jobhost::to_text(s)) + "' WHERE id = '" + id +
            "' RETURNING 1");
  return id;
}

bool in_list(jobhost::Redis& redis, const jobhost::QueueKeys& keys, Band b, const std::string& id) {
  const auto r = redis.command({"LPOS", keys.list(b), id});
  return r->type == REDIS_REPLY_INTEGER;
}

bool in_set(jobhost::Redis& redis, const jobhost::QueueKeys& keys, const std::string& id) {
  return redis.command({"SISMEMBER", keys.members(), id})->integer == 1;
}

bool anywhere(jobhost::Redis& redis, const jobhost::QueueKeys& keys, const std::string& id) {
  for (Band b : jobhost::kBandsInFetchOrder) {
    if (in_list(redis, keys, b, id)) return true;
  }
  return in_set(redis, keys, id);
}

long long length(jobhost::Redis& redis, const jobhost::QueueKeys& keys, Band b) {
  return redis.command({"LLEN", keys.list(b)})->integer;
}

}  // namespace

TEST_CASE("the reconciler removes orphaned Redis ids a chunk at a time and keeps the live ones", "[reconciler]") {
  TestDb db;
  jobhost::Config config;
  config.postgres_url = db.url();
  config.redis_url = db.redis_url();
  config.redis_key_prefix = db.prefix();
  jobhost::Redis redis(db.redis_url());
  const jobhost::QueueKeys keys(db.prefix(), "sweep");
  using S = jobhost::JobState;

  // Live: claimed and pushed, as the migrator does.
  const std::string live = job_in(db, "sweep", S::kMigratedToRedis);
  const std::string live_low = job_in(db, "sweep", S::kMigratedToRedis);
  jobhost::push_jobs(redis, keys, Band::kNormal, {live});
  jobhost::push_jobs(redis, keys, Band::kLow, {live_low});
  // Orphans in a list and the set: a job that has finished, and one that is gone.
  const std::string finished = job_in(db, "sweep", S::kCompleted);
  const std::string gone = db.scalar("SELECT gen_random_uuid()::text");
  jobhost::push_jobs(redis, keys, Band::kHigh, {finished});
  jobhost::push_jobs(redis, keys, Band::kLow, {gone});
  // Orphans only in a list: a job cancelled while it waited, and six that are gone.
  const std::string cancelled = job_in(db, "sweep", S::kCancelled);
  redis.command({"RPUSH", keys.list(Band::kNormal), cancelled});
  std::vector<std::string> gone_from_list;
  for (int i = 0; i < 6; ++i) {
    gone_from_list.push_back(db.scalar("SELECT gen_random_uuid()::text"));
    redis.command({"RPUSH", keys.list(Band::kHigh), gone_from_list.back()});
  }
  // Values that are not job ids at all, in a list and in the set.
  redis.command({"RPUSH", keys.list(Band::kLow), "not-a-job-id"});
  redis.command({"SADD", keys.members(), "not-a-job-id", "{" + live + "}"});
  REQUIRE(length(redis, keys, Band::kHigh) == 7);

  jobhost::Reconciler reconciler(config, 2);
  // Bounded: one pass reads two ids of each list, so the high list (only-in-a-
  // list orphans beyond its first two) keeps most of them for later passes.
  const size_t first = reconciler.sweep(db.conn(), redis);
  CHECK(first > 0);
  CHECK(length(redis, keys, Band::kHigh) >= 4);
  size_t passes = 1;
  while (passes < 20 && reconciler.sweep(db.conn(), redis) > 0) ++passes;
  // Two more full passes find nothing left.
  CHECK(reconciler.sweep(db.conn(), redis) == 0);
  CHECK(reconciler.sweep(db.conn(), redis) == 0);
  CHECK(passes > 1);

  for (const auto& id : {finished, gone, cancelled, std::string("not-a-job-id"), "{" + live + "}"}) {
    INFO(id);
    CHECK_FALSE(anywhere(redis, keys, id));
  }
  for (const auto& id : gone_from_list) CHECK_FALSE(anywhere(redis, keys, id));
  CHECK(in_list(redis, keys, Band::kNormal, live));
  CHECK(in_set(redis, keys, live));
  CHECK(in_list(redis, keys, Band::kLow, live_low));
  CHECK(in_set(redis, keys, live_low));
  CHECK(length(redis, keys, Band::kHigh) == 0);
  CHECK(length(redis, keys, Band::kNormal) == 1);
  CHECK(length(redis, keys, Band::kLow) == 1);
  CHECK(redis.command({"SCARD", keys.members()})->integer == 2);
  // PostgreSQL is only read.
  CHECK(db.status(live) == jobhost::to_text(S::kMigratedToRedis));
  CHECK(db.status(finished) == jobhost::to_text(S::kCompleted));
  CHECK(db.status(cancelled) == jobhost::to_text(S::kCancelled));
}

TEST_CASE("a host with the reaper role sweeps orphaned Redis ids as it runs", "[reconciler]") {
  TestDb db;
  HostOptions o;
  o.roles = "[reaper]";
  auto host = start_host(write_config(db, o));
  jobhost::Redis redis(db.redis_url());
  const jobhost::QueueKeys keys(db.prefix(), "noop");
  const std::string finished = job_in(db, "noop", jobhost::JobState::kCompleted);
  jobhost::push_jobs(redis, keys, Band::kNormal, {finished});
  REQUIRE(anywhere(redis, keys, finished));
  CHECK(eventually([&] { return !anywhere(redis, keys, finished); }, 10s));
  CHECK_THAT(host->log(), Catch::Contains("orphaned ids"));
}
