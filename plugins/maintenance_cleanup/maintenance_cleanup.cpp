// maintenance_cleanup: the job type "maintenance.cleanup", run daily by the
// default config's schedule. Payload: {} (retention comes from the settings).
//
// Each step works in bounded batches, one short statement per batch, with a
// heartbeat between batches and a stop when the attempt is cancelled:
//   1. jobs finished longer ago than their retention: completed and cancelled
//      (retention.completed_jobs_days), dead-lettered (retention.failed_jobs_days);
//      their job_logs go with them (ON DELETE CASCADE). Only those three
//      terminal states are ever touched.
//   2. job_logs rows older than retention.job_logs_days of jobs that are
//      finished but kept (e.g. a DLQ job's early attempts).
//   3. exports past expires_at: the file under settings.export_root is removed
//      and the row marked 'expired' (skipped when export_root is not set).
//   4. Redis: ids in a queue's lists and membership set whose job no longer
//      exists in PostgreSQL (SSCAN in chunks, never KEYS).
#include <hiredis/hiredis.h>

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

// Walks the table in primary-key order (time-ordered ids) from where the last
// batch stopped, so each batch is one index range and no row is read twice.
constexpr const char* kDeleteJobs = R"SQL(
WITH victims AS (
  SELECT id FROM jobhost.jobs
   WHERE id > $1::uuid AND status = $2
     AND coalesce(CASE status WHEN 'completed' THEN completed_at WHEN 'failed' THEN failed_at END, updated_at)
         < now() - $3 * interval '1 day'
   ORDER BY id LIMIT $4
   FOR UPDATE SKIP LOCKED
)
DELETE FROM jobhost.jobs j USING victims v WHERE j.id = v.id AND j.status = $2
RETURNING j.id::text)SQL";

constexpr const char* kDeleteLogs = R"SQL(
WITH victims AS (
  SELECT l.id FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id
   WHERE l.created_at < now() - $1 * interval '1 day'
     AND j.status IN ('completed', 'failed', 'cancelled')
   LIMIT $2
)
DELETE FROM jobhost.job_logs l USING victims v WHERE l.id = v.id)SQL";

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

// redis://[:password@]host[:port][/db]
RedisPtr redis_connect(const std::string& url) {
  static const std::regex form(R"(redis://(?::([^@]*)@)?([^:/]+)(?::(\d+))?(?:/(\d+))?/?)");
  std::smatch m;
  if (!std::regex_match(url, m, form)) throw SettingsError("settings.redis_url: expected redis://[:password@]host[:port][/db]");
  const timeval timeout{5, 0};
  RedisPtr c(redisConnectWithTimeout(m[2].str().c_str(), m[3].matched ? std::stoi(m[3]) : 6379, timeout));
  if (!c || c->err) {
    throw std::runtime_error("Redis at " + m[2].str() + " unreachable: " + (c ? c->errstr : "out of memory"));
  }
  redisSetTimeout(c.get(), timeout);
  if (m[1].matched) command(c.get(), {"AUTH", m[1]});
  if (m[4].matched) command(c.get(), {"SELECT", m[4]});
  return c;
}

int setting_days(const nlohmann::json& retention, const char* key, int fallback) {
  if (!retention.contains(key)) return fallback;
  if (!retention[key].is_number_integer() || retention[key].get<long long>() < 1 || retention[key].get<long long>() > 36500) {
    throw SettingsError(std::string("settings.retention.") + key + ": must be a whole number of days, 1 or more");
  }
  return retention[key].get<int>();
}

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
      if (key != "completed_jobs_days" && key != "failed_jobs_days" && key != "job_logs_days") {
        throw SettingsError("settings.retention." + key +
                            ": unknown; expected completed_jobs_days, failed_jobs_days, job_logs_days");
      }
    }
    completed_days_ = setting_days(retention, "completed_jobs_days", 7);
    failed_days_ = setting_days(retention, "failed_jobs_days", 30);
    logs_days_ = setting_days(retention, "job_logs_days", 30);
    if (batch_ < 1 || batch_ > 100000) throw SettingsError("settings.batch_size: must be between 1 and 100000");
    if (!export_root_.empty() && !fs::is_directory(export_root_)) {
      throw SettingsError("settings.export_root: '" + export_root_ + "' is not a directory");
    }
  }

  std::string validate(std::string_view, const nlohmann::json& p) override {
    for (const auto& [key, _] : p.items()) return "payload." + key + ": unknown; maintenance.cleanup takes {}";
    return {};
  }

  Result handle(Job& job) override {
    auto conn = pool_.acquire();
    const auto t0 = std::chrono::steady_clock::now();
    long long jobs = 0, logs = 0, exports = 0, orphans = 0;
    for (const auto& [status, days] : {std::pair<const char*, int>{"completed", completed_days_},
                                       {"cancelled", completed_days_}, {"failed", failed_days_}}) {
      std::string last = "00000000-0000-0000-0000-000000000000";
      for (;;) {
        if (job.cancelled()) return Result::retry("cleanup: stopped as asked; the next run continues");
        pqxx::nontransaction tx(*conn);
        const pqxx::result r = tx.exec_params(kDeleteJobs, last, status, days, batch_);
        jobs += static_cast<long long>(r.size());
        ++batches_;
        job.heartbeat();
        if (r.size() < static_cast<size_t>(batch_)) break;
        last = r[r.size() - 1][0].c_str();
        for (const auto& row : r) last = std::max(last, std::string(row[0].c_str()));
      }
    }
    for (;;) {
      if (job.cancelled()) return Result::retry("cleanup: stopped as asked; the next run continues");
      pqxx::nontransaction tx(*conn);
      const long long n = tx.exec_params(kDeleteLogs, logs_days_, batch_).affected_rows();
      logs += n;
      ++batches_;
      job.heartbeat();
      if (n < batch_) break;
    }
    if (!export_root_.empty()) exports = expire_exports(job, *conn);
    orphans = redis_orphans(job, *conn);
    const long long ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    job.log_info("cleanup: deleted " + std::to_string(jobs) + " finished jobs and " + std::to_string(logs) +
                 " old job_logs rows, expired " + std::to_string(exports) + " exports, removed " +
                 std::to_string(orphans) + " orphaned Redis ids, in " + std::to_string(ms) + " ms (" +
                 std::to_string(batches_.exchange(0)) + " batches)");
    return Result::ok();
  }

 private:
  long long expire_exports(Job& job, pqxx::connection& conn) {
    const fs::path root = fs::weakly_canonical(export_root_);
    long long done = 0;
    for (;;) {
      pqxx::work tx(conn);
      const pqxx::result r = tx.exec_params(kExpiredExports, batch_);
      for (const auto& row : r) {
        const std::string rel = row[2].c_str();
        if (!rel.empty()) {
          const fs::path file = fs::weakly_canonical(root / rel);
          const auto [end, _] = std::mismatch(root.begin(), root.end(), file.begin(), file.end());
          if (end != root.end()) {
            job.log_warn("export " + std::string(row[0].c_str()) + ": path '" + rel + "' leaves the export root; not removed");
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
      job.heartbeat();
      if (r.size() < static_cast<size_t>(batch_)) return done;
    }
  }

  long long redis_orphans(Job& job, pqxx::connection& conn) {
    RedisPtr redis = redis_connect(redis_url_);
    static const std::regex uuid("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    std::vector<std::string> queues;
    {
      pqxx::nontransaction tx(conn);
      for (const auto& row : tx.exec("SELECT name FROM jobhost.job_queues")) queues.emplace_back(row[0].c_str());
    }
    long long removed = 0;
    for (const auto& queue : queues) {
      const std::string base = prefix_ + ":{" + queue + "}:";
      std::string cursor = "0";
      do {
        const ReplyPtr r = command(redis.get(), {"SSCAN", base + "members", cursor, "COUNT", std::to_string(batch_)});
        cursor = r->element[0]->str;
        std::vector<std::string> ids, bad;
        for (size_t i = 0; i < r->element[1]->elements; ++i) {
          const std::string id = r->element[1]->element[i]->str;
          (std::regex_match(id, uuid) ? ids : bad).push_back(id);
        }
        std::string array = "{";
        for (const auto& id : ids) array += (array.size() > 1 ? "," : "") + id;
        array += "}";
        std::vector<std::string> orphans = bad;
        if (!ids.empty()) {
          pqxx::nontransaction tx(conn);
          const pqxx::result gone = tx.exec_params(
              "SELECT t.id::text FROM unnest($1::uuid[]) AS t(id) "
              "WHERE NOT EXISTS (SELECT 1 FROM jobhost.jobs j WHERE j.id = t.id)",
              array);
          for (const auto& row : gone) orphans.emplace_back(row[0].c_str());
        }
        for (const auto& id : orphans) {
          for (const char* band : {"high", "normal", "low"}) command(redis.get(), {"LREM", base + band, "0", id});
          command(redis.get(), {"SREM", base + "members", id});
        }
        removed += static_cast<long long>(orphans.size());
        job.heartbeat();
      } while (cursor != "0");
    }
    return removed;
  }

  jobhost_plugins::PgPool pool_;
  std::string redis_url_;
  std::string prefix_;
  int batch_;
  std::string export_root_;
  int completed_days_ = 7, failed_days_ = 30, logs_days_ = 30;
  std::atomic<long long> batches_{0};
};

}  // namespace

JOBHOST_PLUGIN(MaintenanceCleanup, "maintenance_cleanup", "1.0.0", "maintenance.cleanup")
