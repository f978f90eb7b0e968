// The completer's and the reaper's statements against the rules of
// host/job_state.hpp: for every way an attempt can end, on its last attempt or
// not, with a cancellation requested or not, PostgreSQL ends up with the state,
// the attempt count and the job_logs row that the C++ rules give.
#include <catch2/catch.hpp>

#include "completer.hpp"
#include "harness.hpp"
#include "job_state.hpp"
#include "outcome.hpp"
#include "reaper.hpp"

using namespace jobhost::test;
using jobhost::AttemptEnd;

namespace {

struct Case {
  AttemptEnd end;
  bool last;
  bool cancel;
  std::string id;
};

// A job leased for attempt 2 of 2 (last) or of 3, its lease expired or not.
std::string leased_job(TestDb& db, bool last, bool cancel, bool expired) {
  return db.scalar(
      "INSERT INTO jobhost.jobs (queue_name, status, attempt_count, max_attempts, started_at, worker_id, "
      "lease_expires_at, cancel_requested_at) VALUES ('rules', '" +
      std::string(jobhost::to_text(jobhost::JobState::kRunning)) + "', 2, " + (last ? "2" : "3") +
      ", now() - interval '1 second', 'w', now() " + (expired ? "- interval '1 minute'" : "+ interval '1 hour'") +
      ", " + (cancel ? "now()" : "NULL") + ") RETURNING id::text");
}

void check_case(TestDb& db, const Case& c) {
  const jobhost::JobState want = jobhost::next_state(c.end, c.last, c.cancel);
  INFO("end " << static_cast<int>(c.end) << ", last attempt " << c.last << ", cancel requested " << c.cancel);
  CHECK(db.status(c.id) == jobhost::to_text(want));
  CHECK(db.field(c.id, "attempt_count") == (jobhost::gives_attempt_back(c.end) ? "1" : "2"));
  CHECK((db.field(c.id, "failed_at") != "") == (want == jobhost::JobState::kFailed));
  const auto log = jobhost::attempt_log(c.end, want);
  CHECK(db.count("SELECT count(*) FROM jobhost.job_logs WHERE job_id = '" + c.id + "'") == (log ? 1 : 0));
  if (log) CHECK(db.scalar("SELECT status FROM jobhost.job_logs WHERE job_id = '" + c.id + "'") == *log);
}

}  // namespace

TEST_CASE("the completer and the reaper write the states and log rows of the C++ transition rules", "[state][sql]") {
  TestDb db;
  std::vector<Case> completed, reaped;
  for (bool last : {false, true}) {
    for (bool cancel : {false, true}) {
      for (AttemptEnd e : jobhost::kAttemptEnds) {
        const bool expiry = e == AttemptEnd::kLeaseExpired;
        (expiry ? reaped : completed).push_back({e, last, cancel, leased_job(db, last, cancel, expiry)});
      }
    }
  }

  jobhost::Completer completer(db.url());
  completer.start();
  const auto now = jobhost::now_us();
  for (const Case& c : completed) {
    completer.submit({c.id, 2, jobhost::outcome_for(c.end, c.last), 1000, "message", now - 1000, now});
  }
  REQUIRE(completer.flush_and_stop(10s) == 0);
  CHECK(completer.stale_outcomes() == 0);

  jobhost::Config config;
  config.postgres_url = db.url();
  jobhost::Reaper reaper(config);
  CHECK(reaper.pass(db.conn()) == reaped.size());

  for (const Case& c : completed) check_case(db, c);
  for (const Case& c : reaped) check_case(db, c);
}
