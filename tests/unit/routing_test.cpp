// Priority bands and Redis key names.
#include <catch2/catch.hpp>

#include "job_state.hpp"
#include "pg.hpp"
#include "redis.hpp"
#include "routing.hpp"

using namespace jobhost;

TEST_CASE("priorities map to the seeds' bands at their boundaries", "[routing]") {
  CHECK(band_for_priority(-5) == Band::kHigh);
  CHECK(band_for_priority(50) == Band::kHigh);
  CHECK(band_for_priority(51) == Band::kNormal);
  CHECK(band_for_priority(100) == Band::kNormal);
  CHECK(band_for_priority(150) == Band::kNormal);
  CHECK(band_for_priority(151) == Band::kLow);
}

TEST_CASE("a queue's keys share one hash tag so its scripts stay on one Cluster slot", "[routing]") {
  const QueueKeys k("jobhost", "email.send");
  CHECK(k.list(Band::kHigh) == "jobhost:{email.send}:high");
  CHECK(k.list(Band::kLow) == "jobhost:{email.send}:low");
  CHECK(k.members() == "jobhost:{email.send}:members");
  CHECK(k.wake() == "jobhost:{email.send}:wake");
}

TEST_CASE("job states convert to the seeds' names and back", "[routing]") {
  for (auto s : {JobState::kQueued, JobState::kMigratedToRedis, JobState::kRunning, JobState::kCompleted,
                 JobState::kRetryScheduled, JobState::kFailed, JobState::kCancelled}) {
    CHECK(job_state_from_text(to_text(s)) == s);
  }
  CHECK(to_text(JobState::kMigratedToRedis) == "migrated_to_redis");
  CHECK_FALSE(job_state_from_text("done").has_value());
  CHECK(is_terminal(JobState::kFailed));
  CHECK_FALSE(is_terminal(JobState::kRetryScheduled));
}

TEST_CASE("array parameters quote and escape text so a batch is one safe parameter", "[routing]") {
  PgArray a;
  a.add("plain");
  a.add(R"(with "quotes" and \ backslash, comma)");
  a.add_null();
  a.add(42);
  CHECK(a.str() == R"({"plain","with \"quotes\" and \\ backslash, comma",NULL,42})");
  CHECK(PgArray().str() == "{}");
}

TEST_CASE("Redis URLs are parsed, and bad ones named", "[routing]") {
  const auto u = parse_redis_url("redis://:s3cret@10.0.0.1:6380/2");
  CHECK(u.host == "10.0.0.1");
  CHECK(u.port == 6380);
  CHECK(u.password == "s3cret");
  CHECK(u.db == 2);
  CHECK(parse_redis_url("redis://localhost").port == 6379);
  CHECK_THROWS_WITH(parse_redis_url("http://x"), Catch::Contains("invalid Redis URL 'http://x'"));
  CHECK(redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db");
}
