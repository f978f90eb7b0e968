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
//   3. app.webhook_deliveries rows older than retention.webhook_deliveries_days
//      (default 30).
//   4. exports past expires_at: the file under settings.export_root is removed
//      (never a path that resolves outside it) and the row marked 'expired'
//      (the step is skipped when export_root is not set).
//   5. Redis: ids in a queue's lists and membership set whose job no longer
//      exists in PostgreSQL (SSCAN / LRANGE in chunks, one existence query per
//      chunk, never KEYS), for every queue of jobhost.job_queues.
// Counts go to the log line that ends the run. PostgreSQL or Redis unreachable
// is a retryable failure naming which; what was done before stays done.
#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/pg_pool.hpp>

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using jobhost::sdk::SettingsError;
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

struct RedisFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisPtr = std::unique_ptr<redisContext, RedisFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

ReplyPtr command(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const auto& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  ReplyPtr r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data())));
  if (!r) throw std::runtime_error(std::string("Redis: ") + c->errstr);
  if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("Redis: ") + r->str);
  return r;
}

// redis://[:password@]host[:port][/db]; throws naming the setting otherwise.
std::smatch parse_redis_url(const std::string& url) {
  static const std::regex form(R"(redis://(?::([^@]*)@)?([^:/]+)(?::(\d+))?(?:/(\d+))?/?)");
  std::smatch m;
  if (!std::regex_match(url, m, form)) throw SettingsError("settings.redis_url: expected redis://[:password@]host[:port][/db]");
  return m;
}

RedisPtr redis_connect(const std::string& url) {
  const std::smatch m = parse_redis_url(url);
  const int port = m[3].matched ? std::stoi(m[3]) : 6379;
  const timeval timeout{5, 0};
  RedisPtr c(redisConnectWithTimeout(m[2].str().c_str(), port, timeout));
  if (!c || c->err) {
    throw std::runtime_error("Redis at " + m[2].str() + ":" + std::to_string(port) +
                             " unreachable: " + (c ? c->errstr : "out of memory"));
  }
  redisSetTimeout(c.get(), timeout);
  if (m[1].matched) command(c.get(), {"AUTH", m[1]});
  if (m[4].matched) command(c.get(), {"SELECT", m[4]});
  return c;
}

// Where a PostgreSQL URL points, without its password, for error messages.
std::string pg_where(const std::string& url) {
  static const std::regex at(R"(^[a-z]+://(?:[^@/]*@)?([^/?]*))");
  std::smatch m;
  return std::regex_search(url, m, at) ? m[1].str() : std::string("the configured database");
}

constexpr const char* kRetentionKeys[] = {"completed_jobs_days", "failed_jobs_days", "job_logs_days",
                                          "webhook_deliveries_days"};

int setting_days(const nlohmann::json& retention, const char* key, int fallback) {
  if (!retention.contains(key)) return fallback;
  if (!retention[key].is_number_integer() || retention[key].get<long long>() < 1 || retention[key].get<long long>() > 36500) {
    throw SettingsError(std::string("settings.retention.") + key + ": must be a whole number of days, 1 or more");
  }
  return retention[key].get<int>();
}

// Thrown out of a step when the attempt is cancelled between two batches.
struct Stopped {};

struct Counts {
  long long jobs = 0, logs = 0, deliveries = 0, exports = 0, orphans = 0, batches = 0;
};

class MaintenanceCleanup : public jobhost::sdk::Plugin {
 public:
  explicit MaintenanceCleanup(const Settings& s)
      : pool_(s.require<std::string>("database_url"), s.get<int>("db_pool_size", 1)),
        redis_url_(s.require<std::string>("redis_url")),
        prefix_(s.get<std::string>("redis_key_prefix", "jobhost")),
        batch_(s.get<int>("batch_size", 1000)),
        export_root_(s.get<std::string>("export_root", "")) {
    const nlohmann::json retention = s.get<nlohmann::json>("retention", nlohmann::json::object());
    if (!retention.is_object()) throw SettingsError("settings.retention: must be a mapping");
    for (const auto& [key, _] : retention.items()) {
      if (std::find(std::begin(kRetentionKeys), std::end(kRetentionKeys), key) == std::end(kRetentionKeys)) {
        throw SettingsError("settings.retention." + key +
                            ": unknown; expected completed_jobs_days, failed_jobs_days, job_logs_days, "
                            "webhook_deliveries_days");
      }
    }
    completed_days_ = setting_days(retention, "completed_jobs_days", 7);
    failed_days_ = setting_days(retention, "failed_jobs_days", 30);
    logs_days_ = setting_days(retention, "job_logs_days", 30);
    deliveries_days_ = setting_days(retention, "webhook_deliveries_days", 30);
    if (batch_ < 1 || batch_ > 100000) throw SettingsError("settings.batch_size: must be between 1 and 100000");
    if (!export_root_.empty() && !fs::is_directory(export_root_)) {
      throw SettingsError("settings.export_root: '" + export_root_ + "' is not a directory");
    }
    if (prefix_.empty()) throw SettingsError("settings.redis_key_prefix: must not be empty");
    parse_redis_url(redis_url_);
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
      const long long last_delivery = scalar(*conn, kLastOldDelivery, deliveries_days_);
      n.deliveries = batched(job, *conn, n, "0", [&](pqxx::nontransaction& tx, const std::string& after) {
        return tx.exec_params(kDeleteDeliveries, std::stoll(after), deliveries_days_, batch_, last_delivery);
      });
      if (!export_root_.empty()) n.exports = expire_exports(job, *conn, n);
      n.orphans = redis_orphans(job, *conn);
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
    return "deleted " + std::to_string(n.jobs) + " finished jobs, " + std::to_string(n.logs) + " old job_logs rows and " +
           std::to_string(n.deliveries) + " webhook deliveries, expired " + std::to_string(n.exports) +
           " exports, removed " + std::to_string(n.orphans) + " orphaned Redis ids";
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

  // Removes from the queue's lists and membership set those of `ids` whose job
  // is not in PostgreSQL (and any that is not a job id at all); returns how many.
  long long drop_orphans(redisContext* redis, pqxx::connection& conn, const std::string& base,
                         const std::vector<std::string>& candidates) {
    static const std::regex uuid("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    std::vector<std::string> orphans;
    std::string array = "{";
    for (const auto& id : candidates) {
      if (!std::regex_match(id, uuid)) {
        orphans.push_back(id);
      } else {
        array += (array.size() > 1 ? "," : "") + id;
      }
    }
    array += "}";
    if (array.size() > 2) {
      pqxx::nontransaction tx(conn);
      const pqxx::result gone = tx.exec_params(
          "SELECT t.id::text FROM unnest($1::uuid[]) AS t(id) "
          "WHERE NOT EXISTS (SELECT 1 FROM jobhost.jobs j WHERE j.id = t.id)",
          array);
      for (const auto& row : gone) orphans.emplace_back(row[0].c_str());
    }
    for (const auto& id : orphans) {
      for (const char* band : {"high", "normal", "low"}) command(redis, {"LREM", base + band, "0", id});
      command(redis, {"SREM", base + "members", id});
    }
    return static_cast<long long>(orphans.size());
  }

  long long redis_orphans(Job& job, pqxx::connection& conn) {
    RedisPtr redis = redis_connect(redis_url_);
    std::vector<std::string> queues;
    {
      pqxx::nontransaction tx(conn);
      for (const auto& row : tx.exec("SELECT name FROM jobhost.job_queues")) queues.emplace_back(row[0].c_str());
    }
    const auto strings = [](const redisReply* array) {
      std::vector<std::string> out;
      for (size_t i = 0; i < array->elements; ++i) out.emplace_back(array->element[i]->str, array->element[i]->len);
      return out;
    };
    long long removed = 0;
    for (const auto& queue : queues) {
      const std::string base = prefix_ + ":{" + queue + "}:";
      // The host adds and removes an id in a list and the set atomically, so
      // the set finds the orphans; the lists are read too, in case they part.
      std::string cursor = "0";
      do {
        if (job.cancelled()) throw Stopped{};
        const ReplyPtr r = command(redis.get(), {"SSCAN", base + "members", cursor, "COUNT", std::to_string(batch_)});
        cursor = std::string(r->element[0]->str, r->element[0]->len);
        removed += drop_orphans(redis.get(), conn, base, strings(r->element[1]));
        job.heartbeat();
      } while (cursor != "0");
      for (const char* band : {"high", "normal", "low"}) {
        // A fetcher may pop from the head meanwhile, so an id can be skipped:
        // the next run sees it. Nothing is removed unless it is an orphan.
        for (long long start = 0;;) {
          if (job.cancelled()) throw Stopped{};
          const ReplyPtr r = command(redis.get(), {"LRANGE", base + band, std::to_string(start),
                                                   std::to_string(start + batch_ - 1)});
          const auto ids = strings(r.get());
          const long long dropped = drop_orphans(redis.get(), conn, base, ids);
          removed += dropped;
          job.heartbeat();
          if (ids.size() < static_cast<size_t>(batch_)) break;
          start += static_cast<long long>(ids.size()) - dropped;
        }
      }
    }
    return removed;
  }

  jobhost_plugins::PgPool pool_;
  std::string redis_url_;
  std::string prefix_;
  int batch_;
  std::string export_root_;
  int completed_days_ = 7, failed_days_ = 30, logs_days_ = 30, deliveries_days_ = 30;
};

}  // namespace

JOBHOST_PLUGIN(MaintenanceCleanup, "maintenance_cleanup", "1.1.0", "maintenance.cleanup")
