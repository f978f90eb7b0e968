// Batches (DESIGN §10) with real PostgreSQL, Redis and jobhost processes: the
// callback runs exactly once with the right counts through a killed host,
// completers on several hosts, a DLQ replay after the end, cancellation, and
// a crash between a member's last write and the batch's finish.
#include <csignal>

#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "api_host.hpp"
#include "harness.hpp"

using namespace jobhost::test;
using nlohmann::json;

namespace {

std::pair<int, std::string> jobctl(const TestDb& db, std::vector<std::string> args) {
  args.insert(args.begin(), bin_dir() + "/jobctl");
  return run(args, {"DATABASE_URL=" + db.url(), "REDIS_URL=" + db.redis_url(), "JOBHOST_REDIS_PREFIX=" + db.prefix()});
}

// A batch whose callback is a noop job marked {"callback": <tag>}.
std::string open_batch(TestDb& db, const std::string& tag) {
  return db.scalar("SELECT jobhost.batch_open('noop', jsonb_build_object('callback', '" + tag + "'), 'test')");
}

void add(TestDb& db, const std::string& batch, const std::string& payload, int n) {
  pqxx::work tx(db.conn());
  tx.exec_params("SELECT count(*) FROM jobhost.enqueue_many('noop', array_fill($1::jsonb, ARRAY[$2::int]), "
                 "batch_id => $3::uuid)",
                 payload, n, batch);
  tx.commit();
}

std::string close_batch(TestDb& db, const std::string& batch) {
  return db.scalar("SELECT jobhost.batch_close('" + batch + "')");
}

// The callback jobs of a batch, as their payloads' "batch" objects, oldest first.
std::vector<json> callbacks(TestDb& db, const std::string& tag) {
  pqxx::nontransaction tx(db.conn());
  std::vector<json> out;
  for (const auto& r : tx.exec_params("SELECT payload->'batch' FROM jobhost.jobs WHERE payload->>'callback' = $1 "
                                      "ORDER BY created_at, id",
                                      tag)) {
    out.push_back(json::parse(r[0].c_str()));
  }
  return out;
}

long long members(TestDb& db, const std::string& batch, const std::string& status) {
  return db.count("SELECT count(*) FROM jobhost.jobs WHERE batch_id = '" + batch + "' AND status = '" + status + "'");
}

}  // namespace

TEST_CASE("batch: 2,000 jobs, permanent failures and a host killed mid-run: one callback, right counts", "[batch]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 8;
  o.lease_ms = 1500;
  auto a = start_host(write_config(db, o, "batch-a"), "batch-a");
  auto b = start_host(write_config(db, o, "batch-b"), "batch-b");
  const std::string batch = open_batch(db, "big");
  add(db, batch, R"({"sleep_ms": 3})", 1900);
  add(db, batch, R"({"permanent": true})", 100);
  CHECK(close_batch(db, batch) == "closed");
  REQUIRE(eventually([&] { return members(db, batch, "completed") > 300; }, 30s));
  a->kill9();
  REQUIRE(a->wait(5s) == 128 + SIGKILL);
  // host-b finishes the rest; the killed host's leases expire and run again.
  REQUIRE(eventually([&] { return db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + batch + "'") == "finished"; },
                     90s));
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' = 'big' "
                                           "AND status = 'completed'") == 1; },
                     20s));
  std::this_thread::sleep_for(1s);  // a second callback would have had time to appear
  const auto cbs = callbacks(db, "big");
  REQUIRE(cbs.size() == 1);
  CHECK(cbs[0]["id"] == batch);
  CHECK(cbs[0]["total"] == 2000);
  CHECK(cbs[0]["completed"] == 1900);
  CHECK(cbs[0]["failed"] == 100);
  CHECK(cbs[0]["cancelled"] == 0);
  CHECK(cbs[0]["finishes"] == 1);
  CHECK(members(db, batch, "completed") == 1900);
  CHECK(members(db, batch, "failed") == 100);
  // The stored counts agree with the jobs, and jobctl shows them.
  const auto [rc, out] = jobctl(db, {"batch", "status", batch});
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("finished") && Catch::Contains("completed        1900") &&
                      Catch::Contains("failed           100") && Catch::Contains("pending          0"));
  CHECK(db.scalar("SELECT callback_job_id FROM jobhost.batches WHERE id = '" + batch + "'") ==
        db.scalar("SELECT id FROM jobhost.jobs WHERE payload->>'callback' = 'big'"));
}

TEST_CASE("batch: many small batches whose last jobs end on different hosts at once call back once each",
          "[batch]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 16;
  std::vector<std::unique_ptr<Process>> hosts;
  for (int i = 0; i < 3; ++i) {
    const std::string tag = "batch-race-" + std::to_string(i);
    hosts.push_back(start_host(write_config(db, o, tag), tag));
  }
  constexpr int kBatches = 150;
  std::vector<std::string> ids;
  for (int i = 0; i < kBatches; ++i) {
    ids.push_back(open_batch(db, "race"));
    // Jobs of equal length started together: their ends (and the checks
    // that follow them) land on several completers within a millisecond.
    add(db, ids.back(), R"({"sleep_ms": 20})", 4);
    close_batch(db, ids.back());
  }
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.batches WHERE state = 'finished'") == kBatches; },
                     60s));
  REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' = 'race' "
                                           "AND status = 'completed'") == kBatches; },
                     30s));
  std::this_thread::sleep_for(1s);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' = 'race'") == kBatches);
  CHECK(db.count("SELECT count(DISTINCT payload->'batch'->>'id') FROM jobhost.jobs WHERE payload->>'callback' = 'race'") ==
        kBatches);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' = 'race' AND "
                 "(payload->'batch'->>'completed')::int <> 4") == 0);
  // The spread of finishing checks over hosts: at least two hosts ran members.
  CHECK(db.count("SELECT count(DISTINCT split_part(worker_id, '/', 1)) FROM jobhost.jobs WHERE batch_id IS NOT NULL") >= 2);
}

TEST_CASE("batch: a DLQ replay after the end reopens the batch, which calls back again when it ends again", "[batch]") {
  TestDb db;
  HostOptions o;
  const std::string batch = open_batch(db, "replay");
  add(db, batch, "{}", 5);
  const std::string bad = db.scalar("SELECT jobhost.enqueue('noop', '{\"permanent\": true}', batch_id => '" + batch + "')");
  close_batch(db, batch);
  {
    auto host = start_host(write_config(db, o));
    REQUIRE(eventually([&] { return db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' = 'replay' "
                                             "AND status = 'completed'") == 1; },
                       30s));
  }
  auto first = callbacks(db, "replay");
  REQUIRE(first.size() == 1);
  CHECK(first[0]["completed"] == 5);
  CHECK(first[0]["failed"] == 1);
  // The cause is fixed; the failed member goes back with no host running:
  // the batch is open for counting again and no callback comes yet.
  db.scalar("UPDATE jobhost.jobs SET payload = '{}' WHERE id = '" + bad + "'");
  const auto [rc, out] = jobctl(db, {"dlq", "replay", bad});
  REQUIRE(rc == 0);
  CHECK(db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + batch + "'") == "closed");
  CHECK(db.count("SELECT failed FROM jobhost.batch_status WHERE id = '" + batch + "'") == 0);
  CHECK(callbacks(db, "replay").size() == 1);
  auto host = start_host(write_config(db, o));
  REQUIRE(eventually([&] { return callbacks(db, "replay").size() == 2; }, 30s));
  const auto cbs = callbacks(db, "replay");
  CHECK(cbs[1]["completed"] == 6);
  CHECK(cbs[1]["failed"] == 0);
  CHECK(cbs[1]["finishes"] == 2);
  CHECK(db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + batch + "'") == "finished");
}

TEST_CASE("batch: cancel stops what has not finished, with no callback and the counts saying so", "[batch]") {
  TestDb db;
  HostOptions o;
  o.concurrency = 2;
  auto host = start_host(write_config(db, o));
  const std::string batch = open_batch(db, "cancel");
  add(db, batch, R"({"sleep_ms": 60000})", 10);
  close_batch(db, batch);
  REQUIRE(eventually([&] { return members(db, batch, "running") == 2; }, 20s));
  const auto [rc, out] = jobctl(db, {"batch", "cancel", batch});
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("8 jobs that had not started cancelled"));
  // The running two see the request at their next heartbeat and end cancelled.
  REQUIRE(eventually([&] { return members(db, batch, "cancelled") == 10; }, 20s));
  REQUIRE(eventually([&] { return db.count("SELECT cancelled FROM jobhost.batch_status WHERE id = '" + batch + "'") == 10; },
                     5s));
  std::this_thread::sleep_for(1s);
  CHECK(db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + batch + "'") == "cancelled");
  CHECK(callbacks(db, "cancel").empty());
  const auto [rc2, out2] = jobctl(db, {"batch", "cancel", batch});
  CHECK(rc2 == 1);
  CHECK_THAT(out2, Catch::Contains("already finished or been cancelled"));
}

TEST_CASE("batch: jobs cannot join a closed, cancelled or unknown batch, and closing twice is harmless", "[batch]") {
  TestDb db;
  const std::string batch = open_batch(db, "closed");
  add(db, batch, "{}", 2);
  CHECK(close_batch(db, batch) == "closed");
  CHECK(close_batch(db, batch) == "closed");
  pqxx::work tx(db.conn());
  try {
    tx.exec("SELECT jobhost.enqueue('noop', '{}', batch_id => '" + batch + "')");
    FAIL("enqueue into a closed batch was accepted");
  } catch (const pqxx::sql_error& e) {
    CHECK_THAT(e.what(), Catch::Contains("batch " + batch + " is closed; jobs can be added to an open batch only"));
    CHECK(e.sqlstate() == "55000");
  }
  tx.abort();
  const auto [rc, out] = jobctl(db, {"enqueue", "noop", "{}", "--batch", batch});
  CHECK(rc == 1);
  CHECK_THAT(out, Catch::Contains("is closed"));
  const auto [rc2, out2] = jobctl(db, {"enqueue", "noop", "{}", "--batch", "00000000-0000-7000-8000-000000000001"});
  CHECK(rc2 == 1);
  CHECK_THAT(out2, Catch::Contains("no batch 00000000-0000-7000-8000-000000000001"));
  // Nothing of it was stored; the batch still counts 2.
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs") == 2);
  CHECK(db.count("SELECT total FROM jobhost.batch_status WHERE id = '" + batch + "'") == 2);
  // An empty batch finishes when it is closed.
  const std::string empty = open_batch(db, "empty");
  CHECK(close_batch(db, empty) == "finished");
  CHECK(callbacks(db, "empty").size() == 1);
}

TEST_CASE("batch: members that ended without finishing their batch (a crash between) are swept by the reaper",
          "[batch]") {
  TestDb db;
  HostOptions o;
  o.roles = "[reaper]";
  auto host = start_host(write_config(db, o));
  const std::string batch = open_batch(db, "sweep");
  add(db, batch, "{}", 3);
  close_batch(db, batch);
  // As a host that died right after writing the members' outcomes leaves it:
  // the members ended and counted, the batch never asked to finish.
  db.scalar("WITH u AS (UPDATE jobhost.jobs SET status = 'completed' WHERE batch_id = '" + batch +
            "' RETURNING 1) SELECT jobhost.batch_add('" + batch + "', 0, completed => (SELECT count(*) FROM u))");
  REQUIRE(eventually([&] { return db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + batch + "'") == "finished"; },
                     10s));
  const auto cbs = callbacks(db, "sweep");
  REQUIRE(cbs.size() == 1);
  CHECK(cbs[0]["completed"] == 3);
  CHECK_THAT(host->log(), Catch::Contains("the sweep finished 1 batches"));

  // Members ended by hand in SQL, their counts never told: the passes that go
  // by the counts leave it; the one that looks at the members (at start, then
  // about once a minute) finishes it.
  const std::string manual = open_batch(db, "manual");
  add(db, manual, "{}", 2);
  close_batch(db, manual);
  db.scalar("UPDATE jobhost.jobs SET status = 'cancelled' WHERE batch_id = '" + manual + "' RETURNING 1");
  std::this_thread::sleep_for(1500ms);
  CHECK(db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + manual + "'") == "closed");
  host.reset();
  host = start_host(write_config(db, o, "again"), "again");
  REQUIRE(eventually([&] { return db.scalar("SELECT state FROM jobhost.batches WHERE id = '" + manual + "'") == "finished"; },
                     10s));
  CHECK(callbacks(db, "manual").size() == 1);
}

TEST_CASE("batch: a plugin adds follow-up jobs to a batch through the SDK, and is refused a closed one", "[batch][sdk]") {
  TestDb db;
  HostOptions o;
  auto host = start_host(write_config(db, o));
  const std::string batch = open_batch(db, "sdk");
  const std::string closed = open_batch(db, "sdk-closed");
  close_batch(db, closed);
  // The parent is outside the batch; its follow-up joins it, with a flow key.
  const std::string parent = db.enqueue(
      "noop", R"({"follow_up": {"type": "noop", "payload": {"child": 1}, "batch_id": ")" + batch +
                  R"(", "flow_key": "tenant-9"}})");
  const std::string refused = db.enqueue(
      "noop", R"({"follow_up": {"type": "noop", "payload": {"child": 2}, "batch_id": ")" + closed + R"("}})");
  REQUIRE(eventually([&] { return db.status(parent) == "completed" && db.status(refused) == "failed"; }, 20s));
  CHECK(db.scalar("SELECT batch_id::text || ' ' || flow_key FROM jobhost.jobs WHERE payload->>'child' = '1'") ==
        batch + " tenant-9");
  CHECK(db.count("SELECT total FROM jobhost.batch_status WHERE id = '" + batch + "'") == 1);
  CHECK_THAT(db.field(refused, "last_error_message"),
             Catch::Contains("follow-up not enqueued") && Catch::Contains("batch " + closed + " is finished"));
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'child' = '2'") == 0);
  close_batch(db, batch);
  REQUIRE(eventually([&] { return callbacks(db, "sdk").size() == 1; }, 20s));
  CHECK(callbacks(db, "sdk")[0]["completed"] == 1);
}

TEST_CASE("batch: the API opens, fills, closes, shows and cancels batches", "[batch][api]") {
  TestDb db;
  HostOptions o;
  o.roles = "[migrator, worker, reaper, api]";
  ApiProcess api(db, o, "  token: \"t0ken-for-tests\"\n");
  auto cli = api.client();
  const auto auth = bearer("t0ken-for-tests");
  auto res = cli.Post("/api/v1/batches", auth, R"({"callback_type": "noop", "callback_payload": {"callback": "api"},
                                                   "description": "from the API"})",
                      "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 201);
  const std::string batch = json::parse(res->body)["id"];
  for (int i = 0; i < 3; ++i) {
    res = cli.Post("/api/v1/jobs", auth, R"({"type": "noop", "payload": {}, "batch_id": ")" + batch + "\"}",
                   "application/json");
    REQUIRE(res);
    CHECK(res->status == 201);
  }
  res = cli.Get("/api/v1/batches", auth);
  REQUIRE(res);
  CHECK(res->status == 200);
  const json open = json::parse(res->body)["batches"];
  REQUIRE(open.size() == 1);
  CHECK(open[0]["id"] == batch);
  CHECK(open[0]["state"] == "open");
  CHECK(open[0]["total"] == 3);
  CHECK(open[0]["description"] == "from the API");
  res = cli.Post("/api/v1/batches/" + batch + "/close", auth, "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  REQUIRE(eventually([&] {
    auto r = cli.Get("/api/v1/batches/" + batch, auth);
    return r && r->status == 200 && json::parse(r->body)["state"] == "finished";
  }, 20s));
  const json done = json::parse(cli.Get("/api/v1/batches/" + batch, auth)->body);
  CHECK(done["completed"] == 3);
  CHECK(done["pending"] == 0);
  CHECK(done["finishes"] == 1);
  CHECK_FALSE(done["callback_job_id"].is_null());
  // A closed batch refuses jobs with 409; an unknown one is a 400 naming the field; a bad id 400.
  res = cli.Post("/api/v1/jobs", auth, R"({"type": "noop", "batch_id": ")" + batch + "\"}", "application/json");
  REQUIRE(res);
  CHECK(res->status == 409);
  CHECK_THAT(res->body, Catch::Contains("is finished; jobs can be added to an open batch only"));
  res = cli.Post("/api/v1/jobs", auth, R"({"type": "noop", "batch_id": "00000000-0000-7000-8000-000000000002"})",
                 "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK_THAT(res->body, Catch::Contains("no batch 00000000-0000-7000-8000-000000000002"));
  res = cli.Post("/api/v1/jobs", auth, R"({"type": "noop", "batch_id": "nope"})", "application/json");
  REQUIRE(res);
  CHECK(res->status == 400);
  CHECK(db.count("SELECT count(*) FROM jobhost.jobs WHERE payload->>'callback' IS NULL") == 3);
  // Cancel: audited; a second cancel is a conflict; an unknown batch 404.
  res = cli.Post("/api/v1/batches", auth, R"({"description": "to cancel"})", "application/json");
  REQUIRE(res);
  const std::string other = json::parse(res->body)["id"];
  res = cli.Post("/api/v1/batches/" + other + "/cancel", auth, "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  res = cli.Post("/api/v1/batches/" + other + "/cancel", auth, "", "application/json");
  REQUIRE(res);
  CHECK(res->status == 409);
  res = cli.Get("/api/v1/batches/00000000-0000-7000-8000-000000000003", auth);
  REQUIRE(res);
  CHECK(res->status == 404);
  CHECK(db.count("SELECT count(*) FROM jobhost.audit_log WHERE action = 'batch.cancel' AND target = '" + other + "'") ==
        1);
  // Writes need the token.
  res = cli.Post("/api/v1/batches", "{}", "application/json");
  REQUIRE(res);
  CHECK(res->status == 401);
}
