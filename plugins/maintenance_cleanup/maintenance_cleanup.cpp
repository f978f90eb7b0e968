// maintenance_cleanup: the job type "maintenance.cleanup", run daily by the
// default config's schedule. Payload: {} (retention comes from the settings).
//
// Each step works in bounded batches (settings.batch_size), one short
// statement (its own transaction) per batch, walking the table's primary key
// from where the last batch stopped so the whole run reads each index once;
// a heartbeat between batches, and a stop (retry) when the attempt is cancelled:
//   1. jobs finished longer ago than their retention: completed and cancelled
//      (retention.completed_jobs_days, default 7), dead-lettered
//      (retention.failed_jobs_days, default 30: the DLQ is kept that long for
//      inspection and replay, then dropped). Their job_logs go with them (ON
//      DELETE CASCADE). Only those three terminal states are ever touched;
//      queued, migrated_to_redis, running and retry_scheduled jobs of any age
//      stay, and so do their logs.
//   2. job_logs rows older than retention.job_logs_days (default 30) of jobs
//      that are finished but kept (e.g. a DLQ job's early attempts).
//   3. jobhost.attempt_counts rows (attempts per minute, which the dashboard
//      and the API's throughput read) older than retention.job_logs_days.
//   4. app.webhook_deliveries rows older than retention.webhook_deliveries_days
//      (default 30).
//   5. exports past expires_at: the file under settings.export_root is removed
//      (never a path that resolves outside it) and the row marked 'expired'
//      (the step is skipped when export_root is not set).
// Counts go to the log line that ends the run. PostgreSQL unreachable is a
// retryable failure naming it; what was done before stays done.
//
// Redis is not this plugin's: ids whose job is gone are removed by the host's
// reconciler, which owns the key layout. Until 1.2.0 this plugin swept them
// itself; its settings redis_url and redis_key_prefix are still accepted, so
// existing configs load, but ignored, with a warning when the plugin is created.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
namespace fs = std::filesystem;

// Each returns (rows deleted, the highest key deleted): the next batch starts
// after that key. Ids are time-ordered, so old rows come first.
constexpr const char* kDeleteJobs = R"SQL(
WITH victims AS (
  SELECT id FROM jobhost.jobs
   WHERE id > $1::uuid AND status = $2
     AND coalesce(CASE status WHEN 'completed' THEN completed_at WHEN 'failed' THEN failed_at END, updated_at)
         < now() - $3 * interval '1 day'
   ORDER BY id LIMIT $4
   FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM jobhost.jobs j USING victims v WHERE j.id = v.id AND j.status = $2 RETURNING j.id
)
SELECT count(*), coalesce(max(id::text), $1::text) FROM gone)SQL";

// Logs of live jobs are kept whatever their age: they are the history of an
// attempt that may still be looked at when the job ends.
// $4 bounds the walk: the highest id older than the retention (found once per
// run through the BRIN index on created_at), so the batches read the old end
// of the table only.
constexpr const char* kDeleteLogs = R"SQL(
WITH victims AS (
  SELECT l.id FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id
   WHERE l.id > $1 AND l.id <= $4 AND l.created_at < now() - $2 * interval '1 day'
     AND j.status IN ('completed', 'failed', 'cancelled')
   ORDER BY l.id LIMIT $3
), gone AS (
  DELETE FROM jobhost.job_logs l USING victims v WHERE l.id = v.id RETURNING l.id
)
SELECT count(*), coalesce(max(id), $1) FROM gone)SQL";

// Walks the primary key, which starts with the minute; $1 is the last minute
// deleted (rows of that minute a batch left are still >= it).
constexpr const char* kDeleteAttemptCounts = R"SQL(
WITH victims AS (
  SELECT minute, queue_name, status, shard FROM jobhost.attempt_counts
   WHERE minute >= $1::timestamptz AND minute < now() - $2 * interval '1 day'
   ORDER BY minute LIMIT $3
), gone AS (
  DELETE FROM jobhost.attempt_counts c USING victims v
   WHERE (c.minute, c.queue_name, c.status, c.shard) = (v.minute, v.queue_name, v.status, v.shard)
  RETURNING c.minute
)
SELECT count(*), coalesce(max(minute)::text, $1::text) FROM gone)SQL";

constexpr const char* kDeleteDeliveries = R"SQL(
WITH victims AS (
  SELECT id FROM app.webhook_deliveries
   WHERE id > $1 AND id <= $4 AND created_at < now() - $2 * interval '1 day'
   ORDER BY id LIMIT $3
), gone AS (
  DELETE FROM app.webhook_deliveries d USING victims v WHERE d.id = v.id RETURNING d.id
)
SELECT count(*), coalesce(max(id), $1) FROM gone)SQL";

constexpr const char* kLastOldLog =
    "SELECT coalesce(max(id), 0) FROM jobhost.job_logs WHERE created_at < now() - $1 * interval '1 day'";
constexpr const char* kLastOldDelivery =
    "SELECT coalesce(max(id), 0) FROM app.webhook_deliveries WHERE created_at < now() - $1 * interval '1 day'";

constexpr const char* kExpiredExports = R"SQL(
SELECT job_id::text, tenant_id, coalesce(path, '') FROM app.exports
 WHERE status = 'completed' AND expires_at < now()
 ORDER BY expires_at LIMIT $1
 FOR UPDATE SKIP LOCKED)SQL";

// Where a PostgreSQL URL points, without its password, for error messages.
std::string pg_where(const std::string& url) {
  static const std::regex at(R"(^[a-z]+://(?:[^@/]*@)?([^/?]*))");
  std::smatch m;
  return std::regex_search(url, m, at) ? m[1].str() : std::string("the configured database");
}

const jobhost_plugins::SettingsReader::Keys kKeys = {
    "database_url", "db_pool_size", "batch_size",      "export_root",
    "retention",    "redis_url",    "redis_key_prefix"};  // the last two: ignored since 1.2.0

constexpr const char* kVersion = "1.2.0";

// Thrown out of a step when the attempt is cancelled between two batches.
struct Stopped {};

struct Counts {
  long long jobs = 0, logs = 0, attempt_counts = 0, deliveries = 0, exports = 0, batches = 0;
};

class MaintenanceCleanup : public jobhost::sdk::Plugin {
 public:
  explicit MaintenanceCleanup(const Settings& settings)
      : MaintenanceCleanup(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit MaintenanceCleanup(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 1),
        batch_(static_cast<int>(s.integer("batch_size", 1000, 1, 100000))),
        export_root_(s.string("export_root", "")) {
    const jobhost_plugins::SettingsReader retention = s.mapping(
        "retention", {"completed_jobs_days", "failed_jobs_days", "job_logs_days", "webhook_deliveries_days"});
    completed_days_ = static_cast<int>(retention.integer("completed_jobs_days", 7, 1, 36500));
    failed_days_ = static_cast<int>(retention.integer("failed_jobs_days", 30, 1, 36500));
    logs_days_ = static_cast<int>(retention.integer("job_logs_days", 30, 1, 36500));
    deliveries_days_ = static_cast<int>(retention.integer("webhook_deliveries_days", 30, 1, 36500));
    if (!export_root_.empty() && !fs::is_directory(export_root_)) {
      s.fail("export_root", "'" + export_root_ + "' is not a directory");
    }
    for (const char* key : {"redis_url", "redis_key_prefix"}) {
      if (s.has(key)) {
        ignored_.push_back(s.where(key) + " is ignored since maintenance_cleanup " + kVersion +
                           ": the host's reconciler removes orphaned Redis ids");
      }
    }
  }

  // The SDK attaches the host right after building the instance (through
  // this class, so this hides Plugin::attach_host): the first moment a plugin
  // can log outside a job, hence where the ignored settings are reported, once.
  void attach_host(const jobhost_host_api* host) {
    Plugin::attach_host(host);
    if (host == nullptr) return;
    for (const auto& warning : ignored_) host->log(nullptr, JOBHOST_LOG_WARN, warning.c_str());
  }

  std::string validate(std::string_view, const nlohmann::json& p) override {
    for (const auto& [key, _] : p.items()) return "payload." + key + ": unknown; maintenance.cleanup takes {}";
    return {};
  }

  Result handle(Job& job) override {
    const auto t0 = std::chrono::steady_clock::now();
    Counts n;
    try {
      auto conn = pool_.acquire();
      for (const auto& [status, days] : {std::pair<const char*, int>{"completed", completed_days_},
                                         {"cancelled", completed_days_}, {"failed", failed_days_}}) {
        n.jobs += batched(job, *conn, n, "00000000-0000-0000-0000-000000000000", [&](pqxx::nontransaction& tx,
                                                                                   const std::string& after) {
          return tx.exec_params(kDeleteJobs, after, status, days, batch_);
        });
      }
      const long long last_log = scalar(*conn, kLastOldLog, logs_days_);
      n.logs = batched(job, *conn, n, "0", [&](pqxx::nontransaction& tx, const std::string& after) {
        return tx.exec_params(kDeleteLogs, std::stoll(after), logs_days_, batch_, last_log);
      });
      n.attempt_counts = batched(job, *conn, n, "-infinity", [&](pqxx::nontransaction& tx, const std::string& after) {
        return tx.exec_params(kDeleteAttemptCounts, after, logs_days_, batch_);
      });
      const long long last_delivery = scalar(*conn, kLastOldDelivery, deliveries_days_);
      n.deliveries = batched(job, *conn, n, "0", [&](pqxx::nontransaction& tx, const std::string& after) {
        return tx.exec_params(kDeleteDeliveries, std::stoll(after), deliveries_days_, batch_, last_delivery);
      });
      if (!export_root_.empty()) n.exports = expire_exports(job, *conn, n);
    } catch (const Stopped&) {
      return Result::retry("cleanup: stopped as asked after " + summary(n) + "; the next run continues");
    } catch (const pqxx::broken_connection& e) {
      return Result::retry("cleanup: PostgreSQL at " + pg_where(pool_.url()) + " unreachable after " + summary(n) +
                           ": " + e.what());
    }
    const long long ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    job.log_info("cleanup: " + summary(n) + ", in " + std::to_string(ms) + " ms (" + std::to_string(n.batches) +
                 " batches)");
    return Result::ok();
  }

 private:
  static std::string summary(const Counts& n) {
    return "deleted " + std::to_string(n.jobs) + " finished jobs, " + std::to_string(n.logs) +
           " old job_logs rows, " + std::to_string(n.attempt_counts) + " old attempt counts and " +
           std::to_string(n.deliveries) + " webhook deliveries, expired " +
           std::to_string(n.exports) + " exports";
  }

  static long long scalar(pqxx::connection& conn, const char* sql, int days) {
    pqxx::nontransaction tx(conn);
    return tx.exec_params(sql, days)[0][0].as<long long>();
  }

  // Runs `batch` (one statement returning (count, last key)) until a batch
  // comes back short; returns the rows it deleted.
  template <typename Batch>
  long long batched(Job& job, pqxx::connection& conn, Counts& n, std::string after, Batch batch) {
    long long total = 0;
    for (;;) {
      if (job.cancelled()) throw Stopped{};
      pqxx::nontransaction tx(conn);
      const pqxx::row r = batch(tx, after)[0];
      const long long done = r[0].as<long long>();
      total += done;
      ++n.batches;
      job.heartbeat();
      if (done < batch_) return total;
      after = r[1].c_str();
    }
  }

  long long expire_exports(Job& job, pqxx::connection& conn, Counts& n) {
    const fs::path root = fs::weakly_canonical(export_root_);
    long long done = 0;
    for (;;) {
      if (job.cancelled()) throw Stopped{};
      pqxx::work tx(conn);
      const pqxx::result r = tx.exec_params(kExpiredExports, batch_);
      for (const auto& row : r) {
        const std::string rel = row[2].c_str();
        if (!rel.empty()) {
          // weakly_canonical resolves symlinks and "..": what is compared is
          // where the file really is.
          const fs::path file = fs::weakly_canonical(root / rel);
          const auto [end, _] = std::mismatch(root.begin(), root.end(), file.begin(), file.end());
          if (end != root.end() || file == root) {
            job.log_warn("export " + std::string(row[0].c_str()) + ": path '" + rel +
                         "' is not inside the export root; file not removed");
          } else {
            std::error_code ec;
            fs::remove(file, ec);
            if (ec) throw std::runtime_error("cannot remove expired export " + file.string() + ": " + ec.message());
          }
        }
        tx.exec_params("UPDATE app.exports SET status = 'expired' WHERE job_id = $1::uuid AND tenant_id = $2",
                       row[0].c_str(), row[1].c_str());
      }
      tx.commit();
      done += static_cast<long long>(r.size());
      ++n.batches;
      job.heartbeat();
      if (r.size() < static_cast<size_t>(batch_)) return done;
    }
  }

  jobhost_plugins::PgPool pool_;
  int batch_;
  std::string export_root_;
  int completed_days_ = 7, failed_days_ = 30, logs_days_ = 30, deliveries_days_ = 30;
  std::vector<std::string> ignored_;  // warnings about settings no longer used
};

}  // namespace

JOBHOST_PLUGIN(MaintenanceCleanup, "maintenance_cleanup", kVersion, "maintenance.cleanup")
