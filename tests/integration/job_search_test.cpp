// GET /api/v1/jobs (search, keyset pages), the job page's attempts, the
// scheduled list, and POST /api/v1/jobs/bulk with its count confirmation,
// over real HTTP against a real host.
#include <algorithm>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "api_host.hpp"

using namespace jobhost::test;
using nlohmann::json;

namespace {

const std::string kToken = "search-token-0123456789";

json get_json(ApiProcess& api, const std::string& path, int status = 200) {
  auto r = api.client().Get(path);
  REQUIRE(r);
  INFO(path << " → " << r->body);
  REQUIRE(r->status == status);
  return json::parse(r->body);
}

json post_json(ApiProcess& api, const std::string& path, const json& body, int status = 200) {
  auto r = api.client().Post(path, bearer(kToken), body.dump(), "application/json");
  REQUIRE(r);
  INFO(path << " " << body.dump() << " → " << r->body);
  REQUIRE(r->status == status);
  return json::parse(r->body);
}

// Jobs as inserted i hours ago (the time-ordered id of that moment, as
// jobhost.new_job_id() made it then); nothing runs them.
void seed(TestDb& db) {
  db.scalar("INSERT INTO jobhost.jobs (id, queue_name, status, max_attempts, created_at, failed_at, completed_at) "
            "SELECT encode(substring(int8send((extract(epoch FROM t) * 1000)::bigint) FROM 3) "
            "              || substring(uuid_send(gen_random_uuid()) FROM 7), 'hex')::uuid, "
            "       CASE WHEN i % 2 = 0 THEN 'email.send' ELSE 'export.data' END, "
            "       (ARRAY['completed', 'failed', 'cancelled', 'queued'])[1 + i % 4], 3, t, now(), now() "
            "  FROM generate_series(1, 40) AS i, LATERAL (SELECT now() - i * interval '1 hour' AS t) x");
}

HostOptions api_only() {
  HostOptions o;
  o.roles = "[api]";
  return o;
}

}  // namespace

TEST_CASE("search: filters by type, state and time, newest first, a keyset page at a time", "[api][search]") {
  TestDb db;
  seed(db);
  ApiProcess api(db, api_only(), "  token: \"" + kToken + "\"\n");

  // Every page of 7 in turn: no job twice, none missed, ids descending.
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    const json p = get_json(api, "/api/v1/jobs?limit=7" + (cursor.empty() ? "" : "&cursor=" + cursor));
    for (const auto& j : p["jobs"]) seen.push_back(j["id"]);
    if (p["next_cursor"].is_null()) break;
    cursor = p["next_cursor"];
  }
  CHECK(seen.size() == 40);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 40);
  CHECK(std::is_sorted(seen.rbegin(), seen.rend()));

  const json failed_email = get_json(api, "/api/v1/jobs?type=email.send&status=failed&limit=100");
  CHECK(failed_email["jobs"].size() ==
        static_cast<size_t>(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send' AND status = 'failed'")));
  for (const auto& j : failed_email["jobs"]) {
    CHECK(j["type"] == "email.send");
    CHECK(j["status"] == "failed");
  }
  const json two_states = get_json(api, "/api/v1/jobs?status=failed,cancelled&limit=100");
  CHECK(two_states["jobs"].size() == 20);
  // The last 9.5 hours: jobs 1..9 (created i hours ago); until 4.5 hours ago: 5..9.
  const std::string since = db.scalar("SELECT to_char((now() - interval '9 hours 30 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
  const std::string until = db.scalar("SELECT to_char((now() - interval '4 hours 30 minutes') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
  CHECK(get_json(api, "/api/v1/jobs?limit=100&since=" + since)["jobs"].size() == 9);
  CHECK(get_json(api, "/api/v1/jobs?limit=100&since=" + since + "&until=" + until)["jobs"].size() == 5);

  // Bad input: 400 naming the parameter.
  CHECK(get_json(api, "/api/v1/jobs?status=bogus", 400)["field"] == "status");
  CHECK(get_json(api, "/api/v1/jobs?cursor=not-an-id", 400)["field"] == "cursor");
  CHECK(get_json(api, "/api/v1/jobs?since=yesterday-ish", 400)["field"] == "since");
  CHECK(get_json(api, "/api/v1/jobs?colour=red", 400)["field"] == "colour");
  CHECK(get_json(api, "/api/v1/jobs?limit=0", 400)["field"] == "limit");
}

// The flow-key index leaves out the states of the hot path (017): a job
// migrated to Redis or running is still found by its key, through the
// indexes of those states.
TEST_CASE("search: by flow key finds a key's jobs in every state, in flight too", "[api][search][flow]") {
  TestDb db;
  db.scalar("INSERT INTO jobhost.jobs (queue_name, status, max_attempts, flow_key, completed_at, failed_at, "
            "                          lease_expires_at, attempt_count) "
            "SELECT 'email.send', s, 3, k, now(), now(), now() + interval '1 minute', 1 "
            "  FROM unnest(ARRAY['queued', 'migrated_to_redis', 'running', 'completed', 'retry_scheduled', "
            "                    'failed', 'cancelled']) AS s, unnest(ARRAY['tenant-a', 'tenant-b']) AS k, "
            "       generate_series(1, 3)");
  ApiProcess api(db, api_only(), "  token: \"" + kToken + "\"\n");

  const json all = get_json(api, "/api/v1/jobs?flow_key=tenant-a&limit=100");
  CHECK(all["jobs"].size() == 21);
  std::set<std::string> states;
  for (const auto& j : all["jobs"]) {
    CHECK(j["flow_key"] == "tenant-a");
    states.insert(j["status"]);
  }
  CHECK(states.size() == 7);
  for (const char* s : {"migrated_to_redis", "running", "completed", "queued"}) {
    const json one = get_json(api, std::string("/api/v1/jobs?flow_key=tenant-b&limit=100&status=") + s);
    CHECK(one["jobs"].size() == 3);
    for (const auto& j : one["jobs"]) CHECK(j["status"] == s);
  }
  CHECK(get_json(api, "/api/v1/jobs?flow_key=tenant-c&limit=100")["jobs"].empty());
}

TEST_CASE("search: a job's attempts with errors and durations, and the scheduled list soonest first",
          "[api][search]") {
  TestDb db;
  ApiProcess api(db, api_only(), "  token: \"" + kToken + "\"\n");
  const std::string id = db.enqueue("noop");
  db.scalar("INSERT INTO jobhost.job_logs (job_id, status, log_message, attempt_number, started_at, finished_at, duration) "
            "VALUES ('" + id + "', 'retry_scheduled', 'timeout talking to the relay', 1, now(), now(), interval '250 ms'), "
            "       ('" + id + "', 'completed', NULL, 2, now(), now(), interval '12 ms')");
  const json a = get_json(api, "/api/v1/jobs/" + id + "/attempts")["attempts"];
  REQUIRE(a.size() == 2);
  CHECK(a[0]["attempt"] == 1);
  CHECK(a[0]["error"] == "timeout talking to the relay");
  CHECK(a[0]["duration_ms"].get<double>() == Approx(250));
  CHECK(a[1]["status"] == "completed");
  CHECK(get_json(api, "/api/v1/jobs/nope/attempts", 400)["field"] == "id");

  const std::string later = db.scalar("SELECT jobhost.enqueue('noop', '{}', 100, now() + interval '2 hours')::text");
  const std::string sooner = db.scalar("SELECT jobhost.enqueue('noop', '{}', 10, now() + interval '1 hour')::text");
  const json s = get_json(api, "/api/v1/scheduled")["jobs"];
  REQUIRE(s.size() == 2);
  CHECK(s[0]["id"] == sooner);
  CHECK(s[1]["id"] == later);
}

TEST_CASE("search: bulk actions change exactly the confirmed count of a filtered set, and are audited",
          "[api][search][audit]") {
  TestDb db;
  seed(db);
  ApiProcess api(db, api_only(), "  token: \"" + kToken + "\"\n");
  const json filter = {{"type", "email.send"}, {"status", "failed,cancelled"}};
  const auto queued_email = [&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send' AND status = 'queued'");
  };
  const long long queued_before = queued_email();
  const std::string other = "SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'export.data' AND status IN ('failed', 'cancelled')";
  const long long other_before = db.count(other);

  // Preview: how many it would change (replay applies to failed and cancelled).
  const json preview = post_json(api, "/api/v1/jobs/bulk", {{"action", "replay"}, {"filter", filter}});
  const long long n = db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'email.send' AND status IN ('failed', 'cancelled')");
  REQUIRE(n > 0);
  CHECK(preview["would_change"] == n);
  // A count that is not the filter's changes nothing.
  const json stale = post_json(api, "/api/v1/jobs/bulk", {{"action", "replay"}, {"filter", filter}, {"count", n + 1}}, 409);
  CHECK_THAT(stale["error"].get<std::string>(), Catch::Contains("matches " + std::to_string(n) + " jobs now"));
  CHECK(queued_email() == queued_before);
  // The confirmed count: done.
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "replay"}, {"filter", filter}, {"count", n}})["changed"] == n);
  CHECK(queued_email() == queued_before + n);
  CHECK(db.count(other) == other_before);

  // Cancel applies to unfinished jobs only; delete to finished ones only.
  const long long waiting = queued_email();
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "cancel"}, {"filter", {{"type", "email.send"}}}})["would_change"] == waiting);
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "cancel"}, {"filter", {{"type", "email.send"}}}, {"count", waiting}})["changed"] == waiting);
  const long long finished = db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'export.data' AND status IN ('completed', 'failed', 'cancelled')");
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "delete"}, {"filter", {{"type", "export.data"}}}, {"count", finished}})["changed"] == finished);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'export.data'") == 20 - finished);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'export.data' AND status = 'queued'") == 20 - finished);

  // Bad input and missing tokens are refused before anything is done.
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "explode"}}, 400)["field"] == "action");
  CHECK(post_json(api, "/api/v1/jobs/bulk", {{"action", "delete"}, {"filter", {{"colour", "red"}}}}, 400)["field"] == "colour");
  auto anonymous = api.client().Post("/api/v1/jobs/bulk", json{{"action", "delete"}, {"count", 0}}.dump(), "application/json");
  REQUIRE(anonymous);
  CHECK(anonymous->status == 401);

  CHECK(db.scalar("SELECT string_agg(action || ' ' || count, ', ' ORDER BY id) FROM jobhost.audit_log") ==
        "jobs.bulk_replay " + std::to_string(n) + ", jobs.bulk_cancel " + std::to_string(waiting) +
            ", jobs.bulk_delete " + std::to_string(finished));
}
