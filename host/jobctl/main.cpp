// jobctl: the operator's command line. Talks to PostgreSQL (the truth) and
// Redis (the live view) using DATABASE_URL / REDIS_URL, or a host's --config.
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "admin.hpp"
#include "batches.hpp"
#include "bench.hpp"
#include "config.hpp"
#include "job_state.hpp"
#include "migrations.hpp"
#include "pause.hpp"
#include "pg.hpp"
#include "plugin_loader.hpp"
#include "redis.hpp"
#include "routing.hpp"

namespace {

using jobhost::PgArray;

struct Urls {
  std::string config_file;
  std::string database_url;
  std::string redis_url;
  std::string key_prefix = "jobhost";
};

// --config wins; else the environment. Fails clearly when neither names one.
void resolve(Urls& u) {
  if (!u.config_file.empty()) {
    const jobhost::Config cfg = jobhost::load_config(u.config_file);
    u.database_url = cfg.postgres_url;
    u.redis_url = cfg.redis_url;
    u.key_prefix = cfg.redis_key_prefix;
    return;
  }
  if (const char* v = std::getenv("DATABASE_URL")) u.database_url = v;
  if (const char* v = std::getenv("REDIS_URL")) u.redis_url = v;
  if (const char* v = std::getenv("JOBHOST_REDIS_PREFIX"); v != nullptr && *v != '\0') u.key_prefix = v;
}

std::unique_ptr<pqxx::connection> db(const Urls& u) {
  if (u.database_url.empty()) {
    throw std::runtime_error("no database: set DATABASE_URL or pass --config FILE");
  }
  return jobhost::pg_connect(u.database_url);
}

int cmd_migrate(const Urls& u) {
  auto conn = db(u);
  const auto applied = jobhost::migrate(*conn);
  for (const auto& name : applied) std::printf("applied %s\n", name.c_str());
  std::printf("schema at version %d%s\n", jobhost::schema_version(*conn),
              applied.empty() ? " (already up to date)" : "");
  return 0;
}

struct EnqueueArgs {
  std::string type;
  std::string payload = "{}";
  int priority = 100;
  std::string run_at;
  int max_attempts = 0;
  std::string unique_key;
  std::optional<std::string> flow_key;
  std::string batch;
};

int cmd_enqueue(const Urls& u, const EnqueueArgs& a) {
  try {
    if (!nlohmann::json::parse(a.payload).is_object()) {
      throw std::runtime_error("payload must be a JSON object, e.g. '{\"to\": \"a@example.com\"}'");
    }
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(std::string("payload is not valid JSON: ") + e.what());
  }
  auto conn = db(u);
  pqxx::work tx(*conn);
  const auto row = tx.exec_params1(jobhost::kEnqueueSql, a.type, a.payload, a.priority, a.run_at,
                                   0, a.max_attempts, a.unique_key, a.flow_key, a.batch);
  tx.commit();
  std::printf("%s\n", row[0].c_str());
  return 0;
}

const std::string kStatusSql = jobhost::state_sql(R"sql(
SELECT id::text, queue_name, status, priority, attempt_count, max_attempts, payload::text,
       run_at, created_at, started_at, completed_at, failed_at, updated_at,
       coalesce(last_error_message, ''), coalesce(worker_id, ''), lease_expires_at,
       coalesce(unique_key, ''),
       CASE WHEN status = {running} THEN coalesce(round(progress::numeric * 100, 1) || ' %', 'not reported') END,
       CASE WHEN flow_key = '' THEN '(empty)' ELSE flow_key END, batch_id::text
  FROM jobhost.jobs WHERE id = $1::uuid)sql");

constexpr const char* kLogsSql = R"sql(
SELECT attempt_number, status, started_at, finished_at,
       round(extract(epoch FROM duration) * 1000, 3), coalesce(log_message, '')
  FROM jobhost.job_logs WHERE job_id = $1::uuid ORDER BY id)sql";

int cmd_status(const Urls& u, const std::string& id) {
  auto conn = db(u);
  pqxx::nontransaction tx(*conn);
  const auto r = tx.exec_params(kStatusSql, id);
  if (r.empty()) {
    std::fprintf(stderr, "jobctl: no job with id %s\n", id.c_str());
    return 1;
  }
  const auto& j = r[0];
  const char* labels[] = {"id", "type", "status", "priority", "attempts", "max_attempts", "payload",
                          "run_at", "created_at", "started_at", "completed_at", "failed_at",
                          "updated_at", "last_error", "worker", "lease_expires_at", "unique_key", "progress",
                          "flow_key", "batch"};
  for (int i = 0; i < 20; ++i) {
    if (j[i].is_null() || std::string(j[i].c_str()).empty()) continue;
    std::printf("%-17s %s\n", labels[i], j[i].c_str());
  }
  if (!u.redis_url.empty() && j[2].c_str() == jobhost::to_text(jobhost::JobState::kMigratedToRedis)) {
    try {
      jobhost::Redis redis(u.redis_url);
      const jobhost::QueueKeys keys(u.key_prefix, j[1].c_str());
      const auto m = redis.command({"SISMEMBER", keys.members(), id});
      std::printf("%-17s %s\n", "redis", m->integer ? "waiting in its priority list"
                                                    : "not in Redis (the reconciler will push it again)");
    } catch (const std::exception& e) {
      std::printf("%-17s unreachable: %s\n", "redis", e.what());
    }
  }
  const auto logs = tx.exec_params(kLogsSql, id);
  if (!logs.empty()) std::printf("attempts:\n");
  for (const auto& l : logs) {
    std::printf("  #%s %-16s started %s  %s ms  %s\n", l[0].c_str(), l[1].c_str(),
                l[2].is_null() ? "-" : l[2].c_str(), l[4].is_null() ? "-" : l[4].c_str(), l[5].c_str());
  }
  return 0;
}

const std::string kQueuesSql = jobhost::state_sql(R"sql(
SELECT q.name,
       count(j.id) FILTER (WHERE j.status = {queued}),
       count(j.id) FILTER (WHERE j.status = {retry_scheduled}),
       count(j.id) FILTER (WHERE j.status = {migrated_to_redis}),
       count(j.id) FILTER (WHERE j.status = {running}),
       count(j.id) FILTER (WHERE j.status = {completed}),
       count(j.id) FILTER (WHERE j.status = {failed}),
       coalesce(q.served_at > now() - interval '30 seconds', false),
       q.paused_at IS NOT NULL,
       (SELECT count(*) FROM jobhost.paused_keys k WHERE k.queue_name = q.name)
  FROM jobhost.job_queues q LEFT JOIN jobhost.jobs j ON j.queue_name = q.name
 GROUP BY q.name, q.served_at, q.paused_at ORDER BY q.name)sql");

int cmd_queues(const Urls& u) {
  auto conn = db(u);
  pqxx::nontransaction tx(*conn);
  std::unique_ptr<jobhost::Redis> redis;
  if (!u.redis_url.empty()) redis = std::make_unique<jobhost::Redis>(u.redis_url);
  const auto name = [](jobhost::JobState s) { return std::string(jobhost::to_text(s)); };
  using jobhost::JobState;
  std::printf("%-24s %8s %8s %8s %8s %10s %8s %-20s %s\n", "queue", name(JobState::kQueued).c_str(), "retry",
              "in_redis", name(JobState::kRunning).c_str(), name(JobState::kCompleted).c_str(),
              name(JobState::kFailed).c_str(), "redis high/norm/low", "served");
  for (const auto& r : tx.exec(kQueuesSql)) {
    std::string lists = "-";
    if (redis) {
      const jobhost::QueueKeys keys(u.key_prefix, r[0].c_str());
      lists.clear();
      for (auto b : jobhost::kBandsInFetchOrder) {
        const auto n = redis->command({"LLEN", keys.list(b)});
        lists += (lists.empty() ? "" : "/") + std::to_string(n->integer);
      }
    }
    std::string served = r[7].as<bool>() ? "yes" : "NO PLUGIN (jobs wait)";
    if (r[8].as<bool>()) served += ", PAUSED";
    if (r[9].as<long>() > 0) served += ", " + std::string(r[9].c_str()) + " keys paused";
    std::printf("%-24s %8s %8s %8s %8s %10s %8s %-20s %s\n", r[0].c_str(), r[1].c_str(), r[2].c_str(),
                r[3].c_str(), r[4].c_str(), r[5].c_str(), r[6].c_str(), lists.c_str(), served.c_str());
  }
  return 0;
}

// PostgreSQL holds the pause; Redis is told at once when we can reach it,
// otherwise every host reads it from PostgreSQL within a second.
int cmd_pause(const Urls& u, const std::string& queue, const std::optional<std::string>& key, bool paused) {
  auto conn = db(u);
  bool changed = false;
  try {
    changed = jobhost::set_paused(*conn, queue, key, paused);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "jobctl: %s\n", e.what());
    return 1;
  }
  if (!u.redis_url.empty()) {
    try {
      jobhost::Redis redis(u.redis_url);
      jobhost::refresh_pause(*conn, redis, jobhost::QueueKeys(u.key_prefix, queue), queue);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "jobctl: Redis not told (%s); hosts see it within a second\n", e.what());
    }
  }
  const std::string what = key ? "key '" + *key + "' of queue " + queue : "queue " + queue;
  std::printf("%s %s%s\n", what.c_str(), paused ? "paused" : "resumed", changed ? "" : " (it already was)");
  return 0;
}

int cmd_queue_keys(const Urls& u, const std::string& queue, int limit) {
  auto conn = db(u);
  const nlohmann::json keys = jobhost::admin::queue_keys(*conn, queue, limit);
  const std::string running(jobhost::to_text(jobhost::JobState::kRunning));
  std::printf("%-32s %10s %8s %s\n", "key", "waiting", running.c_str(), "paused");
  for (const auto& k : keys) {
    const std::string key = k["key"];
    std::printf("%-32s %10lld %8lld %s\n", key.empty() ? "(none)" : key.c_str(), k["waiting"].get<long long>(),
                k[running].get<long long>(), k["paused"].get<bool>() ? "PAUSED" : "");
  }
  return 0;
}

int cmd_dlq_list(const Urls& u, const std::string& queue, int limit) {
  auto conn = db(u);
  pqxx::nontransaction tx(*conn);
  static const std::string sql = jobhost::state_sql(
      "SELECT id::text, queue_name, attempt_count, failed_at, coalesce(last_error_message, '') "
      "FROM jobhost.jobs WHERE status = {failed} AND ($1 = '' OR queue_name = $1) "
      "ORDER BY failed_at DESC LIMIT $2");
  const auto r = tx.exec_params(sql, queue, limit);
  for (const auto& row : r) {
    std::printf("%s  %-20s attempts=%s  failed_at=%s  %s\n", row[0].c_str(), row[1].c_str(),
                row[2].c_str(), row[3].c_str(), row[4].c_str());
  }
  std::printf("%zu dead-lettered jobs shown\n", r.size());
  return 0;
}

int cmd_dlq_replay(const Urls& u, const std::string& id, const std::string& queue) {
  if (id.empty() == queue.empty()) throw std::runtime_error("dlq replay: give a job ID or --queue Q (one of them)");
  auto conn = db(u);
  const long n = jobhost::admin::replay(*conn, id, queue);
  if (!id.empty() && n == 0) {
    std::fprintf(stderr, "jobctl: job %s is not in the DLQ (no failed job with that id)\n", id.c_str());
    return 1;
  }
  std::printf("replayed %ld jobs\n", n);
  return 0;
}

int cmd_cancel(const Urls& u, const std::string& id) {
  auto conn = db(u);
  switch (jobhost::admin::cancel(*conn, id)) {
    case jobhost::admin::CancelResult::kCancelled:
      std::printf("job %s cancelled (it had not started)\n", id.c_str());
      return 0;
    case jobhost::admin::CancelResult::kRequested:
      std::printf("job %s is running: its handler is asked to stop at the next heartbeat; it ends cancelled\n",
                  id.c_str());
      return 0;
    case jobhost::admin::CancelResult::kFinished:
      std::fprintf(stderr, "jobctl: job %s has already finished; nothing to cancel\n", id.c_str());
      return 1;
    case jobhost::admin::CancelResult::kNotFound:
      break;
  }
  std::fprintf(stderr, "jobctl: no job %s\n", id.c_str());
  return 1;
}

int cmd_batch_open(const Urls& u, const std::string& callback, const std::string& payload,
                   const std::string& description) {
  auto conn = db(u);
  pqxx::work tx(*conn);
  const auto row = tx.exec_params1("SELECT jobhost.batch_open(NULLIF($1, ''), $2::jsonb, $3)::text", callback,
                                   payload, description);
  tx.commit();
  std::printf("%s\n", row[0].c_str());
  return 0;
}

int cmd_batch_close(const Urls& u, const std::string& id) {
  if (!jobhost::admin::is_uuid(id)) throw std::runtime_error("batch close: not a batch id (a UUID): " + id);
  auto conn = db(u);
  pqxx::work tx(*conn);
  const auto row = tx.exec_params1("SELECT jobhost.batch_close($1::uuid)", id);
  tx.commit();
  std::printf("batch %s is %s\n", id.c_str(), row[0].c_str());
  return 0;
}

int cmd_batch_status(const Urls& u, const std::string& id) {
  auto conn = db(u);
  const auto b = jobhost::batches::status(*conn, id);
  if (!b) {
    std::fprintf(stderr, "jobctl: no batch %s\n", id.c_str());
    return 1;
  }
  using jobhost::JobState;
  for (const std::string& key : std::vector<std::string>{"id", "state", "description", "callback_type", "callback_job_id", "finishes", "total",
        std::string(to_text(JobState::kCompleted)), std::string(to_text(JobState::kFailed)),
        std::string(to_text(JobState::kCancelled)), "pending", "created_at", "closed_at", "finished_at",
        "cancelled_at"}) {
    const auto& v = (*b)[key];
    if (v.is_null() || (v.is_string() && v.get<std::string>().empty())) continue;
    std::printf("%-16s %s\n", key.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
  }
  return 0;
}

int cmd_batch_cancel(const Urls& u, const std::string& id) {
  auto conn = db(u);
  long long n = 0;
  switch (jobhost::batches::cancel(*conn, id, n)) {
    case jobhost::batches::CancelResult::kCancelled:
      std::printf("batch %s cancelled: %lld jobs that had not started cancelled; running ones are asked to stop\n",
                  id.c_str(), n);
      return 0;
    case jobhost::batches::CancelResult::kAlreadyDone:
      std::fprintf(stderr, "jobctl: batch %s has already finished or been cancelled; nothing to cancel\n", id.c_str());
      return 1;
    case jobhost::batches::CancelResult::kNotFound:
      break;
  }
  std::fprintf(stderr, "jobctl: no batch %s\n", id.c_str());
  return 1;
}

int cmd_dlq_purge(const Urls& u, const std::string& queue) {
  auto conn = db(u);
  pqxx::work tx(*conn);
  static const std::string sql =
      jobhost::state_sql("DELETE FROM jobhost.jobs WHERE status = {failed} AND ($1 = '' OR queue_name = $1)");
  const auto r = tx.exec_params(sql, queue);
  tx.commit();
  std::printf("purged %zu dead-lettered jobs\n", static_cast<size_t>(r.affected_rows()));
  return 0;
}

int cmd_inspect(const std::string& lib) {
  const jobhost::PluginInfo info = jobhost::inspect_plugin(lib);
  std::printf("library       %s\nabi           %s (this host loads %u.0 to %s)\n", info.path.c_str(),
              jobhost::abi_text(info.abi_version).c_str(), JOBHOST_ABI_MAJOR,
              jobhost::abi_text(JOBHOST_ABI_VERSION).c_str());
  if (!info.refusal.empty()) {
    std::printf("loadable      no: %s\n", info.refusal.c_str());
    return 1;
  }
  std::printf("loadable      yes\nname          %s\nversion       %s\n", info.name.c_str(), info.version.c_str());
  std::string types;
  for (const auto& t : info.job_types) types += (types.empty() ? "" : ", ") + t;
  std::printf("job_types     %s\ndefault_retry %s\n", types.c_str(),
              info.default_retry_json.empty() ? "(none)" : info.default_retry_json.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobctl: operate a jobhost deployment"};
  app.require_subcommand(1);
  Urls urls;
  app.add_option("--config,-c", urls.config_file, "take database and Redis from this host config");
  // Subcommands only pick the action; it runs after parsing, once --config is known.
  std::function<int()> action;

  auto* dbc = app.add_subcommand("db", "database schema");
  dbc->require_subcommand(1);
  dbc->add_subcommand("migrate", "apply pending migrations")->callback([&] { action = [&] { return cmd_migrate(urls); }; });

  EnqueueArgs ea;
  auto* enq = app.add_subcommand("enqueue", "enqueue a job");
  enq->add_option("type", ea.type, "job type, e.g. email.send")->required();
  enq->add_option("payload", ea.payload, "JSON object (default {})");
  enq->add_option("--priority", ea.priority, "<= 50 high, 51-150 normal, > 150 low (default 100)");
  enq->add_option("--run-at", ea.run_at, "timestamp, e.g. '2026-12-01 08:00:00+00' (default now)");
  enq->add_option("--max-attempts", ea.max_attempts, "default: the queue's")->check(CLI::PositiveNumber);
  enq->add_option("--unique-key", ea.unique_key, "deduplicate: one job per queue and key");
  enq->add_option("--flow-key", ea.flow_key, "the job's flow key (tenant, relay...); default: from the payload by flow.key");
  enq->add_option("--batch", ea.batch, "add the job to this open batch (jobctl batch open)");
  enq->callback([&] { action = [&] { return cmd_enqueue(urls, ea); }; });

  std::string id;
  auto* st = app.add_subcommand("status", "one job: state, attempts, live Redis view");
  st->add_option("id", id, "job id")->required();
  st->callback([&] { action = [&] { return cmd_status(urls, id); }; });

  auto* cn = app.add_subcommand("cancel", "cancel a job: at once if it has not started, else at its next heartbeat");
  cn->add_option("id", id, "job id")->required();
  cn->callback([&] { action = [&] { return cmd_cancel(urls, id); }; });

  app.add_subcommand("queues", "depth of every queue")->callback([&] { action = [&] { return cmd_queues(urls); }; });

  std::string queue;
  int limit = 50;
  std::optional<std::string> flow_key;
  auto* qc = app.add_subcommand("queue", "one queue: pause, resume, its keys");
  qc->require_subcommand(1);
  auto* qp = qc->add_subcommand("pause", "no host starts a new job of the queue (or of --key) until resumed");
  qp->add_option("queue", queue, "queue (job type)")->required();
  qp->add_option("--key", flow_key, "pause only this flow key");
  qp->callback([&] { action = [&] { return cmd_pause(urls, queue, flow_key, true); }; });
  auto* qr = qc->add_subcommand("resume", "start jobs of the queue (or of --key) again");
  qr->add_option("queue", queue, "queue (job type)")->required();
  qr->add_option("--key", flow_key, "resume only this flow key");
  qr->callback([&] { action = [&] { return cmd_pause(urls, queue, flow_key, false); }; });
  int key_limit = 20;
  auto* qk = qc->add_subcommand("keys", "the keys with the most waiting jobs");
  qk->add_option("queue", queue, "queue (job type)")->required();
  qk->add_option("--limit", key_limit, "how many keys (default 20)")->check(CLI::Range(1, 1000));
  qk->callback([&] { action = [&] { return cmd_queue_keys(urls, queue, key_limit); }; });

  auto* dlq = app.add_subcommand("dlq", "dead-lettered (failed) jobs");
  dlq->require_subcommand(1);
  auto* dl = dlq->add_subcommand("list", "list failed jobs, newest first");
  dl->add_option("--queue", queue);
  dl->add_option("--limit", limit);
  dl->callback([&] { action = [&] { return cmd_dlq_list(urls, queue, limit); }; });
  auto* dr = dlq->add_subcommand("replay", "queue failed jobs again: one ID, or every one of --queue");
  dr->add_option("id", id);
  dr->add_option("--queue", queue);
  dr->callback([&] { action = [&] { return cmd_dlq_replay(urls, id, queue); }; });
  auto* dp = dlq->add_subcommand("purge", "delete failed jobs (of --queue, or all)");
  dp->add_option("--queue", queue);
  dp->callback([&] { action = [&] { return cmd_dlq_purge(urls, queue); }; });

  std::string callback, callback_payload = "{}", description;
  auto* bc = app.add_subcommand("batch", "batches: a group of jobs with a callback when all have finished");
  bc->require_subcommand(1);
  auto* bo = bc->add_subcommand("open", "open a batch and print its id (then: jobctl enqueue --batch ID, batch close)");
  bo->add_option("--callback", callback, "job type enqueued once every job of the batch has finished");
  bo->add_option("--callback-payload", callback_payload, "its payload (JSON object); the counts are merged in as \"batch\"");
  bo->add_option("--description", description);
  bo->callback([&] { action = [&] { return cmd_batch_open(urls, callback, callback_payload, description); }; });
  auto* bcl = bc->add_subcommand("close", "no more jobs will be added: the batch finishes when its jobs have");
  bcl->add_option("id", id, "batch id")->required();
  bcl->callback([&] { action = [&] { return cmd_batch_close(urls, id); }; });
  auto* bs = bc->add_subcommand("status", "a batch's state and counts");
  bs->add_option("id", id, "batch id")->required();
  bs->callback([&] { action = [&] { return cmd_batch_status(urls, id); }; });
  auto* bx = bc->add_subcommand("cancel", "cancel what has not finished; no callback runs");
  bx->add_option("id", id, "batch id")->required();
  bx->callback([&] { action = [&] { return cmd_batch_cancel(urls, id); }; });

  std::string lib;
  auto* pl = app.add_subcommand("plugin", "plugin libraries");
  pl->require_subcommand(1);
  auto* pi = pl->add_subcommand("inspect", "show what a plugin library declares");
  pi->add_option("library", lib)->required();
  pi->callback([&] { action = [&] { return cmd_inspect(lib); }; });

  jobhost::ctl::add_bench_command(app, urls.database_url, urls.redis_url, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    resolve(urls);
    return action ? action() : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jobctl: %s\n", e.what());
    return 1;
  }
}
