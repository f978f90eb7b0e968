// Access control and the audit log over real HTTP (DESIGN §12): 401/403 per
// route class, audit rows for every admin write with the token's name, and
// no token in the host's log.
#include <csignal>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "api_host.hpp"

using namespace jobhost::test;
using nlohmann::json;

namespace {

const std::string kWrite = "write-token-7f3a9c";
const std::string kRead = "read-token-51be02";
const std::string kMetrics = "metrics-token-c0ffee";
const std::string kAlice = "alice-token-9d8e7f";
const std::string kViewer = "viewer-token-123abc";

const std::string kAccessYaml =
    "  token: \"" + kWrite + "\"\n"
    "  read_token: \"" + kRead + "\"\n"
    "  metrics_token: \"" + kMetrics + "\"\n"
    "  tokens:\n"
    "    - { name: alice, token: \"" + kAlice + "\", role: write }\n"
    "    - { name: viewer, token: \"" + kViewer + "\", role: read }\n";

// No response at all fails the test with httplib's reason (connection, read, ...).
int status_of(httplib::Result r) {
  if (!r) FAIL("no HTTP response: " << httplib::to_string(r.error()));
  return r->status;
}

// A host with only the api role (jobs stay as the test puts them) and every kind of token.
HostOptions api_only() {
  HostOptions o;
  o.roles = "[api]";
  return o;
}

}  // namespace

TEST_CASE("access: each route class answers 401 without a token, 403 with one that does not reach it",
          "[access][api]") {
  TestDb db;
  ApiProcess api(db, api_only(), kAccessYaml);
  auto c = api.client();
  const std::string id = db.enqueue("noop");

  // Probes: always open.
  CHECK(status_of(c.Get("/healthz")) == 200);
  CHECK(status_of(c.Get("/readyz")) == 200);
  // Metrics: the metrics token, or a read or write one.
  CHECK(status_of(c.Get("/metrics")) == 401);
  CHECK(status_of(c.Get("/metrics", bearer("nope"))) == 403);
  CHECK(status_of(c.Get("/metrics", bearer(kMetrics))) == 200);
  CHECK(status_of(c.Get("/metrics", bearer(kViewer))) == 200);
  // Reads: every GET of /api/v1.
  const std::vector<std::string> reads = {"/api/v1/queues", "/api/v1/jobs/" + id, "/api/v1/dlq", "/api/v1/running",
                                          "/api/v1/failures", "/api/v1/throughput", "/api/v1/audit",
                                          "/api/v1/jobs", "/api/v1/jobs/" + id + "/attempts", "/api/v1/scheduled"};
  for (const std::string& path : reads) {
    INFO(path);
    CHECK(status_of(c.Get(path)) == 401);
    CHECK(status_of(c.Get(path, bearer("nope"))) == 403);
    CHECK(status_of(c.Get(path, bearer(kMetrics))) == 403);
    CHECK(status_of(c.Get(path, bearer(kRead))) == 200);
    CHECK(status_of(c.Get(path, bearer(kViewer))) == 200);
    CHECK(status_of(c.Get(path, bearer(kAlice))) == 200);
  }
  // The dashboard's page is a shell without data; its calls carry the token.
  CHECK(status_of(c.Get("/")) == 200);
  // Writes: a write token.
  const std::string cancel = "/api/v1/jobs/" + id + "/cancel";
  CHECK(status_of(c.Post(cancel, "", "application/json")) == 401);
  CHECK(status_of(c.Post(cancel, bearer(kRead), "", "application/json")) == 403);
  CHECK(status_of(c.Post(cancel, bearer(kViewer), "", "application/json")) == 403);
  CHECK(status_of(c.Post(cancel, bearer(kMetrics), "", "application/json")) == 403);
  CHECK(db.status(id) == "queued");
  const std::string bulk = R"({"action": "cancel", "filter": {"type": "noop"}})";
  CHECK(status_of(c.Post("/api/v1/jobs/bulk", bulk, "application/json")) == 401);
  CHECK(status_of(c.Post("/api/v1/jobs/bulk", bearer(kViewer), bulk, "application/json")) == 403);
  CHECK(status_of(c.Post("/api/v1/jobs/bulk", bearer(kAlice), bulk, "application/json")) == 200);  // a preview
  CHECK(status_of(c.Post(cancel, bearer(kAlice), "", "application/json")) == 200);
  CHECK(db.status(id) == "cancelled");
}

TEST_CASE("access: every admin write is in jobhost.audit_log under its token's name, and no token is logged",
          "[access][audit][api]") {
  TestDb db;
  ApiProcess api(db, api_only(), kAccessYaml);
  auto c = api.client();
  const std::string waiting = db.enqueue("noop");
  db.scalar("SELECT jobhost.enqueue('noop', '{}') FROM generate_series(1, 3)");
  db.scalar("UPDATE jobhost.jobs SET status = 'failed', failed_at = now() WHERE id <> '" + waiting + "'");
  const std::string one_failed = db.scalar("SELECT id::text FROM jobhost.jobs WHERE status = 'failed' LIMIT 1");

  CHECK(status_of(c.Post("/api/v1/jobs/" + waiting + "/cancel", bearer(kAlice), "", "application/json")) == 200);
  CHECK(status_of(c.Post("/api/v1/dlq/" + one_failed + "/replay", bearer(kWrite), "", "application/json")) == 200);
  CHECK(status_of(c.Post("/api/v1/dlq/replay?queue=noop", bearer(kAlice), "", "application/json")) == 200);
  // Refused writes change nothing and are not audited.
  CHECK(status_of(c.Post("/api/v1/dlq/replay?queue=noop", bearer(kViewer), "", "application/json")) == 403);

  CHECK(db.count("SELECT count(*) FROM jobhost.audit_log") == 3);
  CHECK(db.scalar("SELECT string_agg(actor || ' ' || action || ' ' || target || ' ' || count, '; ' ORDER BY id) "
                  "FROM jobhost.audit_log") ==
        "alice job.cancel " + waiting + " 1; api.token dlq.replay " + one_failed + " 1; alice dlq.replay noop 2");
  CHECK(db.scalar("SELECT detail->>'client' FROM jobhost.audit_log ORDER BY id LIMIT 1") == "127.0.0.1");

  // The dashboard reads them from here.
  auto r = c.Get("/api/v1/audit?limit=2", bearer(kViewer));
  REQUIRE(r);
  const json entries = json::parse(r->body)["entries"];
  REQUIRE(entries.size() == 2);
  CHECK(entries[0]["action"] == "dlq.replay");
  CHECK(entries[0]["actor"] == "alice");
  CHECK(entries[0]["count"] == 2);

  // Nothing the host wrote names a token: not its log, not the audit rows.
  api.process().signal(SIGTERM);
  api.process().wait(10s);
  const std::string log = api.process().log();
  const std::string rows = db.scalar("SELECT string_agg(t::text, ' ') FROM jobhost.audit_log t");
  for (const std::string& token : {kWrite, kRead, kMetrics, kAlice, kViewer}) {
    INFO(token);
    CHECK(log.find(token) == std::string::npos);
    CHECK(rows.find(token) == std::string::npos);
  }
}
