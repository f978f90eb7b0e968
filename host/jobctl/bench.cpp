// bench.cpp: `jobctl bench`, the end-to-end benchmark of DESIGN §7. It makes a
// database and a Redis key prefix of its own on the servers given, starts real
// jobhost processes with the noop plugin, and measures three things:
//   enqueue  N jobs through jobhost.enqueue_many() in one transaction;
//   drain    from that commit to the last completion, every state persisted;
//   latency  creation → handler start of jobs enqueued one by one at a paced rate.
// With --soak MINUTES it measures a fourth instead: a steady rate for that
// long while another transaction stays open in the same database. With
// --history N the database first gets N finished jobs, to show whether a
// long history slows the queue.
// Everything it made is removed at the end, also on errors; kept with --keep,
// or when jobs were lost or run twice, so the evidence can be examined.
#include "bench.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include "completer.hpp"
#include "config.hpp"
#include "job_state.hpp"
#include "lease.hpp"
#include "migrations.hpp"
#include "migrator.hpp"
#include "pg.hpp"
#include "redis.hpp"

namespace jobhost::ctl {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct BenchOptions {
  long jobs = 100000;
  int hosts = 1;
  int concurrency = 64;
  int batch = 1000;
  int max_in_redis = 0;  // 0: the host's default
  int rate = 1000;
  int latency_seconds = 10;
  int chunk = 10000;
  // Flow control (DESIGN §9): spread the jobs over this many keys (flow.key
  // /k; 0: no flow: block), each key limited to this many running (0: none).
  int flow_keys = 0;
  bool in_batch = false;  // every job in one batch (DESIGN §10), closed after the enqueue
  bool floor = false;     // also the PostgreSQL floor: the host's statements back to back
  long history = 0;       // finished jobs (with a job_logs row each) in the table before the run
  int per_key_concurrency = 0;
  // Run the latency phase while the drain runs, its jobs under a key of
  // their own ("small"), to see whether a big backlog delays another key.
  bool latency_during_drain = false;
  // Soak (DESIGN §7): `rate` jobs/s for this many minutes with a transaction
  // held open all along, reported minute by minute; 0: the usual phases.
  double soak_minutes = 0;
  bool keep = false;
  std::string jobhost_bin;
  std::string plugin;
};

std::atomic<bool> g_interrupted{false};

void check_interrupted() {
  if (g_interrupted) throw std::runtime_error("interrupted");
}

fs::path self_dir() { return fs::read_symlink("/proc/self/exe").parent_path(); }

// The same connection as `url`, to another database. Goes through libpq's own
// parser so URIs with parameters and key=value strings both work.
std::string with_database(const std::string& url, const std::string& dbname) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (!opts) {
    std::string msg = err ? err : "unparsable";
    PQfreemem(err);
    throw std::runtime_error("DATABASE_URL: " + msg);
  }
  std::string out;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    const bool is_db = std::string(o->keyword) == "dbname";
    if (!is_db && !o->val) continue;
    std::string v = is_db ? dbname : o->val;
    std::string quoted;
    for (char c : v) {
      if (c == '\\' || c == '\'') quoted += '\\';
      quoted += c;
    }
    out += std::string(out.empty() ? "" : " ") + o->keyword + "='" + quoted + "'";
  }
  PQconninfoFree(opts);
  return out;
}

// One jobhost process, its output in a file; SIGTERMed if jobctl dies.
class HostProcess {
 public:
  HostProcess(const std::string& bin, const fs::path& config, const fs::path& log) : log_(log) {
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~HostProcess() {
    if (!exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  bool running() {
    if (!exited_ && waitpid(pid_, nullptr, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }
  void wait_ready(std::chrono::seconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (log().find(" ready") == std::string::npos) {
      check_interrupted();
      if (!running()) throw std::runtime_error("jobhost exited during start-up; its output:\n" + log());
      if (Clock::now() > deadline) throw std::runtime_error("jobhost not ready in time; its output:\n" + log());
      std::this_thread::sleep_for(20ms);
    }
  }
  // SIGTERM, then SIGKILL if it has not stopped by the deadline.
  void stop(std::chrono::seconds grace) {
    if (!running()) return;
    kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + grace;
    while (running() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    if (running()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      exited_ = true;
    }
  }
  // Resident and peak resident set, in MB, from /proc.
  std::pair<double, double> rss_mb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    double rss = 0, hwm = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("VmRSS:", 0) == 0) rss = std::stod(line.substr(6)) / 1024;
      if (line.rfind("VmHWM:", 0) == 0) hwm = std::stod(line.substr(6)) / 1024;
    }
    return {rss, hwm};
  }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  fs::path log_;
};

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

double mem_gib() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  in >> key >> kb;
  return kb / 1024 / 1024;
}

std::string yaml_quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string host_yaml(const BenchOptions& o, const std::string& db_url, const std::string& redis_url,
                      const std::string& prefix, int index) {
  std::ostringstream y;
  y << "# Written by jobctl bench; removed when it ends.\n"
    << "postgres: { url: " << yaml_quote(db_url) << ", pool_size: 4 }\n"
    << "redis: { url: " << yaml_quote(redis_url) << ", key_prefix: " << prefix << " }\n"
    << "host:\n"
    << "  id: bench-" << index << "\n"
    << "  roles: [migrator, worker, reaper]\n"
    << "  migrator: { batch_size: " << o.batch << ", poll_interval_ms: 1000"
    << (o.max_in_redis > 0 ? ", max_in_redis: " + std::to_string(o.max_in_redis) : std::string()) << " }\n"
    << "  shutdown_grace_ms: 5000\n"
    << "log: { level: info }\n"
    << "plugins:\n"
    << "  - name: noop\n"
    << "    library: " << yaml_quote(o.plugin) << "\n"
    << "    job_types: [noop]\n"
    << "    concurrency: { min: 1, max: " << o.concurrency << " }\n";
  if (o.flow_keys > 0) {
    y << "    flow:\n      key: /k\n";
    if (o.per_key_concurrency > 0) y << "      per_key: { concurrency: " << o.per_key_concurrency << " }\n";
  }
  return y.str();
}

// Everything the run made, undone in reverse whatever happens.
struct Cleanup {
  const BenchOptions& o;
  std::string admin_url, redis_url, dbname, prefix;
  fs::path dir;
  std::vector<std::unique_ptr<HostProcess>> hosts;
  bool db_created = false;
  bool evidence = false;  // a correctness check failed: keep everything

  ~Cleanup() {
    for (auto& h : hosts) h->stop(10s);
    if (o.keep || evidence) {
      std::printf("kept        database %s, Redis prefix %s, configs and logs in %s\n", dbname.c_str(),
                  prefix.c_str(), dir.c_str());
      return;
    }
    try {
      if (db_created) {
        auto admin = pg_connect(admin_url);
        pqxx::nontransaction tx(*admin);
        tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(dbname) + " WITH (FORCE)");
      }
      Redis redis(redis_url);
      std::string cursor = "0";
      do {
        const auto r = redis.command({"SCAN", cursor, "MATCH", prefix + ":*", "COUNT", "1000"});
        cursor = r->element[0]->str;
        std::vector<std::string> del{"UNLINK"};
        for (size_t i = 0; i < r->element[1]->elements; ++i) del.emplace_back(r->element[1]->element[i]->str);
        if (del.size() > 1) redis.command(del);
      } while (cursor != "0");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "jobctl bench: cleanup incomplete: %s\n", e.what());
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const std::string kRemainingSql =
    state_sql("SELECT count(*) FROM jobhost.jobs WHERE status NOT IN ({terminal})");

// Whether any job is left, asked of the partial indexes of the live states:
// a handful of index pages. The count above reads the whole table, which at a
// million jobs takes a core away from the hosts being measured if polled.
const std::string kAnyLeftSql = state_sql(R"sql(
SELECT EXISTS (SELECT 1 FROM jobhost.jobs WHERE status IN ({ready}))
    OR EXISTS (SELECT 1 FROM jobhost.jobs WHERE status = {migrated_to_redis})
    OR EXISTS (SELECT 1 FROM jobhost.jobs WHERE status = {running}))sql");

// Waits until no job is left to run; returns false on timeout.
bool wait_drained(pqxx::connection& conn, std::vector<std::unique_ptr<HostProcess>>& hosts,
                  std::chrono::seconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    check_interrupted();
    for (auto& h : hosts) {
      if (!h->running()) throw std::runtime_error("a jobhost exited mid-run; its output:\n" + h->log());
    }
    pqxx::nontransaction tx(conn);
    if (!tx.exec1(kAnyLeftSql)[0].as<bool>()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
}

double enqueue_phase(pqxx::connection& conn, const BenchOptions& o, std::string& commit_ts) {
  const auto t0 = Clock::now();
  pqxx::work tx(conn);
  const std::string batch =
      o.in_batch ? tx.exec1("SELECT jobhost.batch_open(description => 'jobctl bench')")[0].c_str() : std::string();
  long done = 0;
  while (done < o.jobs) {
    PgArray payloads;
    const long n = std::min<long>(o.chunk, o.jobs - done);
    for (long i = 0; i < n; ++i) {
      const long k = done + i;
      payloads.add(o.flow_keys > 0 ? "{\"bench\": " + std::to_string(k) + ", \"k\": \"k" + std::to_string(k % o.flow_keys) + "\"}"
                                   : "{\"bench\": " + std::to_string(k) + "}");
    }
    tx.exec_params("SELECT count(*) FROM jobhost.enqueue_many('noop', $1::jsonb[], batch_id => NULLIF($2, '')::uuid)",
                   payloads.str(), batch);
    done += n;
  }
  if (o.in_batch) tx.exec_params("SELECT jobhost.batch_close($1::uuid)", batch);
  tx.commit();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  pqxx::nontransaction nt(conn);
  commit_ts = nt.exec1("SELECT clock_timestamp()::text")[0].c_str();
  return secs;
}

// `threads` producers, each on its own connection, enqueue one job per
// statement on a fixed schedule so the rate holds even if one call is slow.
long latency_phase(const std::string& db_url, const BenchOptions& o) {
  const int threads = std::min(4, std::max(1, o.rate / 50));
  const auto period = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(static_cast<double>(threads) / o.rate));
  const auto start = Clock::now() + 200ms;
  const auto end = start + std::chrono::seconds(o.latency_seconds);
  std::atomic<long> sent{0};
  std::vector<std::string> errors(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        auto conn = pg_connect(db_url);
        conn->prepare("enqueue", o.flow_keys > 0 ? "SELECT jobhost.enqueue('noop', '{\"latency\": true, \"k\": \"small\"}')"
                                                 : "SELECT jobhost.enqueue('noop', '{\"latency\": true}')");
        // Stagger the producers evenly across one period.
        for (auto next = start + period * t / threads; next < end && !g_interrupted; next += period) {
          std::this_thread::sleep_until(next);
          // Autocommit: the job's created_at (its transaction's start) is the
          // moment it was submitted, and it is visible once the call returns.
          pqxx::nontransaction tx(*conn);
          tx.exec_prepared("enqueue");
          ++sent;
        }
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& e : errors) {
    if (!e.empty()) throw std::runtime_error("latency producer failed: " + e);
  }
  check_interrupted();
  return sent;
}

const std::string kDrainSql = state_sql(R"sql(
SELECT count(*) FILTER (WHERE j.status = {completed}),
       count(*) FILTER (WHERE j.status = {failed}),
       count(*) FILTER (WHERE j.attempt_count <> 1),
       extract(epoch FROM max(j.completed_at) - $1::timestamptz)
  FROM jobhost.jobs j WHERE j.payload ? 'bench')sql");

constexpr const char* kRunsSql = R"sql(
SELECT count(*) FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id
 WHERE j.payload ? 'bench')sql";

constexpr const char* kLatencySql = R"sql(
SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
  FROM (SELECT extract(epoch FROM l.started_at - j.created_at) * 1000 AS ms
          FROM jobhost.jobs j JOIN jobhost.job_logs l ON l.job_id = j.id AND l.attempt_number = 1
         WHERE j.payload ? 'latency') s)sql";

// A history (DESIGN §7: cost per job flat from an empty history to 10M
// retained finished jobs): jobs of the bench's queue completed 40 days ago,
// one job_logs row each, old enough that maintenance_cleanup's default
// retention (7 days for jobs, 30 for logs) removes them all, so a kept
// database can also time that sweep. Inserted before the hosts start, in
// chunks of their own transactions, then vacuumed and analyzed as autovacuum
// would have by then.
const std::string kHistorySql = state_sql(R"sql(
WITH j AS (
  INSERT INTO jobhost.jobs (queue_name, status, payload, attempt_count, max_attempts, run_at, started_at,
                            completed_at, created_at, updated_at)
  SELECT 'noop', {completed}, '{"history": true}', 1, 3, t, t, t, t, t
    FROM (SELECT now() - interval '40 days' + make_interval(secs => ($1::bigint + g) / 1000.0) AS t
            FROM generate_series(1, $2::bigint) g) s
  RETURNING id, completed_at)
INSERT INTO jobhost.job_logs (job_id, status, attempt_number, started_at, finished_at, duration, created_at)
SELECT id, {completed}, 1, completed_at, completed_at, interval '0', completed_at FROM j)sql");

void history_phase(pqxx::connection& conn, long n) {
  constexpr long kChunk = 500000;
  const auto t0 = Clock::now();
  for (long done = 0; done < n; done += kChunk) {
    check_interrupted();
    pqxx::work tx(conn);
    tx.exec_params(kHistorySql, done, std::min(kChunk, n - done));
    tx.commit();
  }
  const double insert_s = std::chrono::duration<double>(Clock::now() - t0).count();
  pqxx::nontransaction tx(conn);
  tx.exec("VACUUM (ANALYZE) jobhost.jobs, jobhost.job_logs");
  const double vacuum_s = std::chrono::duration<double>(Clock::now() - t0).count() - insert_s;
  const auto r = tx.exec1("SELECT (SELECT count(*) FROM jobhost.jobs WHERE payload ? 'history'), "
                          "(SELECT count(*) FROM jobhost.job_logs), "
                          "pg_size_pretty(pg_table_size('jobhost.jobs')), "
                          "pg_size_pretty(pg_indexes_size('jobhost.jobs')), "
                          "pg_size_pretty(pg_total_relation_size('jobhost.job_logs'))");
  std::printf("history     %s finished jobs and %s job_logs rows, inserted in %.0f s and vacuumed in %.0f s; "
              "jobs %s + indexes %s, job_logs %s\n",
              r[0].c_str(), r[1].c_str(), insert_s, vacuum_s, r[2].c_str(), r[3].c_str(), r[4].c_str());
  std::fflush(stdout);
}

// The PostgreSQL floor (DESIGN §7): the statements the host runs on a job's
// way, with no Redis, no handler and no process in between: the migrator's
// claim (migrator.cpp) on one connection, and on another the fetcher's lease
// (lease.cpp) and the completer's write (completer.cpp) of what was claimed,
// batches of o.batch, the two loops side by side as a host's threads are.
// The jobs go in a queue no host serves, so the running hosts leave them be.
// Returns jobs/s from the end of the enqueue to the last completion.
double floor_phase(const std::string& db_url, const BenchOptions& o) {
  const std::string queue = "jobhost_bench_floor";
  {
    auto conn = pg_connect(db_url);
    pqxx::work tx(*conn);
    for (long done = 0; done < o.jobs;) {
      const long n = std::min<long>(o.chunk, o.jobs - done);
      tx.exec_params("SELECT count(*) FROM jobhost.enqueue_many($1, array_fill('{\"floor\": true}'::jsonb, ARRAY[$2::int]))",
                     queue, n);
      done += n;
    }
    tx.commit();
  }
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> claimed;
  bool claiming_done = false;
  std::exception_ptr error;
  const auto t0 = Clock::now();
  std::thread claimer([&] {
    try {
      auto conn = pg_connect(db_url);
      hot_path_session(*conn);  // as the host's migrator
      ClaimFloors floors;
      long total = 0;
      while (total < o.jobs) {
        const pqxx::result r = claim_plain(*conn, queue, o.batch, floors);
        if (r.empty()) throw std::runtime_error("floor: the claim found no job with " + std::to_string(o.jobs - total) + " left");
        total += static_cast<long>(r.size());
        std::lock_guard lock(mu);
        for (const auto& row : r) claimed.emplace_back(row[0].c_str());
        cv.notify_one();
      }
    } catch (...) {
      std::lock_guard lock(mu);
      error = std::current_exception();
    }
    std::lock_guard lock(mu);
    claiming_done = true;
    cv.notify_one();
  });
  long written = 0;
  // The claimer ends by itself (every job claimed, or none left): join it
  // before an error here leaves the function.
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{claimer};
  auto conn = pg_connect(db_url);
  hot_path_session(*conn);  // as the host's fetcher and completer
  for (;;) {
    std::vector<std::string> ids;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !claimed.empty() || claiming_done; });
      if (claimed.empty() && claiming_done) break;
      while (!claimed.empty() && ids.size() < static_cast<size_t>(o.batch)) {
        ids.push_back(std::move(claimed.front()));
        claimed.pop_front();
      }
    }
    std::vector<Outcome> outcomes;
    for (const LeasedJob& j : lease_jobs(*conn, ids, "floor/1", 30000)) {
      const int64_t now = now_us();
      outcomes.push_back({j.id, j.attempt, OutcomeKind::kCompleted, 0, "", now, now});
    }
    written += static_cast<long>(Completer::write(*conn, outcomes));
  }
  claimer.join();
  if (error) std::rethrow_exception(error);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (written != o.jobs) {
    throw std::runtime_error("floor: " + std::to_string(written) + " of " + std::to_string(o.jobs) + " jobs completed");
  }
  return o.jobs / secs;
}


// ---- soak ----
//
// A steady `rate` for `minutes` while a REPEATABLE READ transaction on
// another connection stays open for the whole run, as a long analytics query
// would: VACUUM can then remove none of the row versions the jobs' state
// changes leave behind. At each minute's end the bench notes the time and
// the sizes of the jobs table and of its indexes (cheap) and prints them; the
// minute's figures, which read every one of its jobs, are worked out after
// the run, so that the bench's own queries (seconds of a core each by then)
// do not load the minutes they measure: how many of its jobs completed
// within 30 s of its end, their creation -> handler start p50 / p99, and the
// jobs waiting (not started) at its end.

// One minute of the producer: the smallest and largest job id it enqueued
// (ids are time-ordered, so the minute's jobs are one primary-key range),
// and what the bench noted at its end.
struct SoakMinute {
  std::string first_id, last_id;
  long sent = 0;
  double ended_at = 0;  // the server's clock, s since the epoch
  double table_mb = 0, indexes_mb = 0;
};

// A minute's jobs: completed by its end + 30 s, start latency p50 and p99,
// and when each that had not started by its end did start (s since the
// epoch, "inf": never), comma-separated.
const std::string kSoakMinuteSql = state_sql(R"sql(
SELECT count(*) FILTER (WHERE status = {completed} AND completed_at <= to_timestamp($3::float8 + 30)),
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000), 0),
       coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000), 0),
       coalesce(string_agg(coalesce(extract(epoch FROM started_at)::text, 'inf'), ',')
                FILTER (WHERE started_at IS NULL OR started_at > to_timestamp($3::float8)), '')
  FROM jobhost.jobs WHERE id BETWEEN $1::uuid AND $2::uuid)sql");

const std::string kSoakSizesSql =
    "SELECT extract(epoch FROM clock_timestamp()), pg_table_size('jobhost.jobs') / 1048576.0, "
    "pg_indexes_size('jobhost.jobs') / 1048576.0";

const std::string kSoakEndSql = state_sql(R"sql(
SELECT count(*) FILTER (WHERE status = {completed}), count(*) FILTER (WHERE attempt_count <> 1)
  FROM jobhost.jobs)sql");

void soak_phase(pqxx::connection& conn, const std::string& db_url, const BenchOptions& o) {
  // The held transaction: a snapshot taken now and kept to the end.
  auto held = pg_connect(db_url);
  pqxx::transaction<pqxx::repeatable_read> hold(*held);
  const auto h = hold.exec1("SELECT pg_backend_pid(), txid_current(), (SELECT count(*) FROM jobhost.jobs)");
  std::printf("soak        %d jobs/s for %g min; a REPEATABLE READ transaction (backend %s, txid %s) is held open "
              "in the same database for the whole run\n",
              o.rate, o.soak_minutes, h[0].c_str(), h[1].c_str());
  const std::string pid = h[0].c_str();

  const auto run_for = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.soak_minutes * 60));
  const int minutes = static_cast<int>(std::ceil(o.soak_minutes - 1e-9));
  std::vector<SoakMinute> per_minute(minutes);
  std::mutex mu;
  std::atomic<bool> stop{false};
  std::string producer_error;
  const auto start = Clock::now();
  // One producer: every 10 ms, the jobs due by then in one enqueue_many call,
  // so the rate holds without a statement per job.
  std::thread producer([&] {
    try {
      auto pc = pg_connect(db_url);
      long sent = 0;
      for (auto next = start; !stop && !g_interrupted; next += 10ms) {
        std::this_thread::sleep_until(next);
        const auto now = Clock::now();
        if (now - start >= run_for) break;
        const long due = static_cast<long>(std::chrono::duration<double>(now - start).count() * o.rate) - sent;
        if (due <= 0) continue;
        PgArray payloads;
        for (long i = 0; i < due; ++i) payloads.add("{\"soak\": true}");
        pqxx::nontransaction tx(*pc);
        const auto r = tx.exec_params1(
            "SELECT min(id::text), max(id::text) FROM jobhost.enqueue_many('noop', $1::jsonb[]) AS t(id)",
            payloads.str());
        sent += due;
        const int m = std::min(minutes - 1, static_cast<int>((now - start) / 60s));
        std::lock_guard lock(mu);
        auto& pm = per_minute[m];
        if (pm.first_id.empty()) pm.first_id = r[0].c_str();
        pm.last_id = r[1].c_str();
        pm.sent += due;
      }
    } catch (const std::exception& e) {
      std::lock_guard lock(mu);
      producer_error = e.what();
    }
  });

  pqxx::nontransaction tx(conn);
  std::string failure;
  for (int m = 0; m < minutes && failure.empty(); ++m) {
    const auto minute_end = start + std::min<Clock::duration>(run_for, std::chrono::minutes(m + 1));
    while (Clock::now() < minute_end && !g_interrupted) std::this_thread::sleep_for(100ms);
    if (g_interrupted) break;
    const auto st = tx.exec1(kSoakSizesSql);
    std::lock_guard lock(mu);
    if (!producer_error.empty()) failure = "soak producer failed: " + producer_error;
    SoakMinute& pm = per_minute[m];
    pm.ended_at = st[0].as<double>();
    pm.table_mb = st[1].as<double>();
    pm.indexes_mb = st[2].as<double>();
    std::printf("soak        minute %d over: %ld enqueued, jobs table %.1f MB, its indexes %.1f MB\n", m + 1,
                pm.sent, pm.table_mb, pm.indexes_mb);
    std::fflush(stdout);
  }
  stop = true;
  producer.join();
  check_interrupted();
  if (!failure.empty()) throw std::runtime_error(failure);
  if (!producer_error.empty()) throw std::runtime_error("soak producer failed: " + producer_error);

  // The held transaction's age, as the server sees it, then let it go.
  const auto age = tx.exec_params1(
      "SELECT extract(epoch FROM now() - xact_start), backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = $1::int",
      pid);
  long sent = 0;
  for (const auto& pm : per_minute) sent += pm.sent;
  // A minute that fell behind (done < enqueued above) is caught up now.
  auto end = tx.exec1(kSoakEndSql);
  for (const auto give_up = Clock::now() + 300s; end[0].as<long>() < sent && Clock::now() < give_up;) {
    check_interrupted();
    std::this_thread::sleep_for(1s);
    end = tx.exec1(kSoakEndSql);
  }
  // Each minute's figures, now that the run is over. A job is waiting at a
  // minute's end if it was enqueued by then and had not started: of each
  // minute's jobs, those not started by its own end are listed, and counted
  // again at every later end they had not started by.
  std::printf("soak        %-7s %9s %9s %9s %9s %9s %10s %10s %12s\n", "minute", "enqueued", "done", "jobs/s",
              "p50 ms", "p99 ms", "waiting", "table MB", "indexes MB");
  std::vector<double> p99s;
  std::vector<double> late;  // start times (s since the epoch) of jobs not started by their minute's end
  for (int m = 0; m < minutes && per_minute[m].ended_at > 0; ++m) {
    const SoakMinute& pm = per_minute[m];
    long done = 0;
    double p50 = 0, p99 = 0;
    if (pm.sent > 0) {
      const auto r = tx.exec_params1(kSoakMinuteSql, pm.first_id, pm.last_id, pm.ended_at);
      done = r[0].as<long>();
      p50 = r[1].as<double>();
      p99 = r[2].as<double>();
      for (const char* p = r[3].c_str(); *p;) {
        char* next = nullptr;
        late.push_back(std::strtod(p, &next));
        p = *next == ',' ? next + 1 : next;
      }
    }
    const long waiting = std::count_if(late.begin(), late.end(), [&](double t) { return t > pm.ended_at; });
    const double secs = std::chrono::duration<double>(
        std::min<Clock::duration>(run_for, std::chrono::minutes(m + 1)) - std::chrono::minutes(m)).count();
    std::printf("soak        %-7d %9ld %9ld %9.0f %9.2f %9.2f %10ld %10.1f %12.1f\n", m + 1, pm.sent, done,
                done / secs, p50, p99, waiting, pm.table_mb, pm.indexes_mb);
    p99s.push_back(p99);
  }
  std::printf("soak        %ld jobs sent, %s completed, %s with more than one attempt; the held transaction "
              "was open %.0f s%s\n",
              sent, end[0].c_str(), end[1].c_str(), age[0].as<double>(),
              age[1].as<bool>() ? ", holding back the xmin horizon" : "");
  if (p99s.size() > 1 && p99s.front() > 0) {
    std::printf("soak        start-latency p99 of the last minute is %.2f x the first minute's\n",
                p99s.back() / p99s.front());
  }
  hold.abort();
  if (end[0].as<long>() != sent || end[1].as<long>() != 0)
    throw std::runtime_error("soak lost or repeated jobs: " + std::to_string(sent) + " sent");
}

int run_bench(const BenchOptions& o, const std::string& database_url, const std::string& redis_url) {
  if (database_url.empty()) throw std::runtime_error("no database: set DATABASE_URL or pass --config FILE");
  if (redis_url.empty()) throw std::runtime_error("no Redis: set REDIS_URL or pass --config FILE");
  if (!fs::exists(o.jobhost_bin)) throw std::runtime_error("no jobhost binary at " + o.jobhost_bin + " (--jobhost)");
  if (!fs::exists(o.plugin)) throw std::runtime_error("no noop plugin at " + o.plugin + " (--plugin)");

  const std::string tag = std::to_string(getpid());
  Cleanup c{o, database_url, redis_url, "jobhost_bench_" + tag, "jobhost_bench_" + tag,
            fs::temp_directory_path() / ("jobhost-bench-" + tag), {}, false};
  fs::create_directories(c.dir);

  std::string server;
  {
    auto admin = pg_connect(database_url);
    pqxx::nontransaction tx(*admin);
    const auto r = tx.exec1("SELECT current_setting('server_version'), current_setting('synchronous_commit'), "
                            "current_setting('fsync')");
    server = std::string(r[0].c_str()) + ", synchronous_commit=" + r[1].c_str() + ", fsync=" + r[2].c_str();
    tx.exec("CREATE DATABASE " + tx.quote_name(c.dbname));
    c.db_created = true;
  }
  std::string redis_version = "?";
  {
    Redis redis(redis_url);
    require_non_evicting(redis);
    const std::string info = redis.command({"INFO", "server"})->str;
    const auto at = info.find("redis_version:");
    if (at != std::string::npos) redis_version = info.substr(at + 14, info.find('\r', at) - at - 14);
  }
  const std::string db_url = with_database(database_url, c.dbname);
  auto conn = pg_connect(db_url);
  migrate(*conn);

  if (o.soak_minutes > 0) {
    std::printf("jobctl bench --soak: %d no-op jobs/s for %g min, %d host(s) x concurrency %d, migrator batch %d\n",
                o.rate, o.soak_minutes, o.hosts, o.concurrency, o.batch);
  } else {
    std::printf("jobctl bench: %ld no-op jobs, %d host(s) x concurrency %d, migrator batch %d\n", o.jobs, o.hosts,
                o.concurrency, o.batch);
  }
  if (o.max_in_redis > 0) std::printf("window      migrator.max_in_redis %d\n", o.max_in_redis);
  if (o.flow_keys > 0) {
    std::printf("flow        key /k over %d keys%s%s\n", o.flow_keys,
                o.per_key_concurrency > 0 ? (", per_key concurrency " + std::to_string(o.per_key_concurrency)).c_str() : "",
                o.latency_during_drain ? "; latency jobs under key \"small\" while the drain runs" : "");
  }
  std::printf("machine     %u cores, %s, %.1f GiB RAM\n", std::thread::hardware_concurrency(),
              cpu_model().c_str(), mem_gib());
  std::printf("postgresql  %s\nredis       %s\n", server.c_str(), redis_version.c_str());
  std::fflush(stdout);
  if (o.history > 0) history_phase(*conn, o.history);

  for (int i = 0; i < o.hosts; ++i) {
    const fs::path cfg = c.dir / ("host-" + std::to_string(i) + ".yaml");
    std::ofstream(cfg) << host_yaml(o, db_url, redis_url, c.prefix, i);
    c.hosts.push_back(std::make_unique<HostProcess>(o.jobhost_bin, cfg, c.dir / ("host-" + std::to_string(i) + ".log")));
  }
  for (auto& h : c.hosts) h->wait_ready(30s);
  std::vector<std::pair<double, double>> idle_rss;
  for (auto& h : c.hosts) idle_rss.push_back(h->rss_mb());

  if (o.soak_minutes > 0) {
    soak_phase(*conn, db_url, o);
    return 0;
  }

  std::string commit_ts;
  const double enqueue_secs = enqueue_phase(*conn, o, commit_ts);
  std::printf("enqueue     %ld jobs in %.2f s = %.0f jobs/s (jobhost.enqueue_many, %d per call, one transaction)\n",
              o.jobs, enqueue_secs, o.jobs / enqueue_secs, o.chunk);
  std::fflush(stdout);

  // The latency phase during the drain: its producers run on threads of
  // their own; the drain below waits for both.
  long during_sent = 0;
  std::thread during;
  std::exception_ptr during_error;
  if (o.latency_during_drain && o.latency_seconds > 0) {
    during = std::thread([&] {
      try {
        during_sent = latency_phase(db_url, o);
      } catch (...) {
        during_error = std::current_exception();
      }
    });
  }
  double drain_rate = 0;
  const auto drain_timeout = std::chrono::seconds(60 + o.jobs / 500);
  const bool drained = wait_drained(*conn, c.hosts, drain_timeout);
  if (during.joinable()) during.join();
  if (during_error) std::rethrow_exception(during_error);
  if (!drained) {
    pqxx::nontransaction tx(*conn);
    throw std::runtime_error("drain did not finish in " + std::to_string(drain_timeout.count()) + " s; " +
                             tx.exec1(kRemainingSql)[0].c_str() + " jobs left");
  }
  {
    pqxx::nontransaction tx(*conn);
    const auto r = tx.exec_params1(kDrainSql, commit_ts);
    const long completed = r[0].as<long>(), failed = r[1].as<long>(), reruns = r[2].as<long>();
    const double secs = r[3].is_null() ? 0 : r[3].as<double>();
    const long runs = tx.exec1(kRunsSql)[0].as<long>();
    drain_rate = secs > 0 ? completed / secs : 0.0;
    std::printf("drain       %ld jobs in %.2f s = %.0f jobs/s (commit -> last completion); "
                "%ld completed, %ld failed, %ld handler runs%s\n",
                completed, secs, drain_rate, completed, failed, runs,
                runs == o.jobs && reruns == 0 ? ", each job ran once" : " (NOT once each)");
    if (completed != o.jobs || runs != o.jobs || reruns != 0) {
      c.evidence = true;
      throw std::runtime_error("drain lost or repeated jobs: expected " + std::to_string(o.jobs) +
                               " completed jobs with one run each");
    }
  }
  if (o.in_batch) {
    // The batch finishes once its last member's outcome is written.
    pqxx::nontransaction tx(*conn);
    std::optional<std::string> state;
    for (int i = 0; i < 100; ++i) {
      const auto r = tx.exec_params1(
          "SELECT b.state, extract(epoch FROM b.finished_at - $1::timestamptz), s.total, s.completed "
          "FROM jobhost.batches b JOIN jobhost.batch_status s USING (id) ORDER BY b.created_at DESC LIMIT 1",
          commit_ts);
      state = r[0].c_str();
      if (*state == "finished") {
        std::printf("batch       one batch of %s jobs, %s completed; finished %.2f s after the commit\n", r[2].c_str(),
                    r[3].c_str(), r[1].as<double>());
        break;
      }
      std::this_thread::sleep_for(100ms);
    }
    if (state != "finished") throw std::runtime_error("the batch did not finish (state " + state.value_or("?") + ")");
  }
  for (size_t i = 0; i < c.hosts.size(); ++i) {
    const auto [rss, hwm] = c.hosts[i]->rss_mb();
    std::printf("host %-6zu rss %.1f MB idle before the run, %.1f MB after it (peak %.1f MB)\n", i,
                idle_rss[i].first, rss, hwm);
  }
  std::fflush(stdout);

  if (o.latency_seconds > 0) {
    const long sent = o.latency_during_drain ? during_sent : latency_phase(db_url, o);
    if (!wait_drained(*conn, c.hosts, 60s)) throw std::runtime_error("latency jobs did not finish in 60 s");
    pqxx::nontransaction tx(*conn);
    const auto r = tx.exec1(kLatencySql);
    if (r[0].as<long>() != sent) {
      c.evidence = true;
      throw std::runtime_error("latency: " + std::to_string(sent) + " jobs sent but " + r[0].c_str() + " ran");
    }
    std::printf("latency     %ld jobs at %d/s for %d s%s, creation -> handler start: "
                "p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
                sent, o.rate, o.latency_seconds, o.latency_during_drain ? " during the drain" : "", r[1].as<double>(), r[2].as<double>(), r[3].as<double>(),
                r[4].as<double>());
  }
  if (o.floor) {
    const double floor = floor_phase(db_url, o);
    std::printf("floor       %ld jobs at %.0f jobs/s: the host's claim, lease and completion statements back to back "
                "(batches of %d, no Redis, no handler); the drain above is %.2f of it\n",
                o.jobs, floor, o.batch, floor > 0 ? drain_rate / floor : 0.0);
  }
  return 0;
}

void on_interrupt(int) { g_interrupted = true; }

}  // namespace

void add_bench_command(CLI::App& app, const std::string& database_url, const std::string& redis_url,
                       std::function<int()>& action) {
  static BenchOptions o;
  o.jobhost_bin = (self_dir() / "jobhost").string();
  o.plugin = (self_dir().parent_path() / "plugins" / "libnoop.so").string();
  auto* b = app.add_subcommand("bench", "end-to-end benchmark on a scratch database (DESIGN §7)");
  b->add_option("--jobs", o.jobs, "jobs to enqueue and drain")->capture_default_str()->check(CLI::Range(1L, 100000000L));
  b->add_option("--hosts", o.hosts, "jobhost processes")->capture_default_str()->check(CLI::Range(1, 16));
  b->add_option("--concurrency", o.concurrency, "workers per host")->capture_default_str()->check(CLI::Range(1, 1024));
  b->add_option("--batch", o.batch, "migrator batch size")->capture_default_str()->check(CLI::Range(1, 100000));
  b->add_option("--rate", o.rate, "jobs/s in the latency phase, or of the soak")->capture_default_str()->check(CLI::Range(1, 100000));
  b->add_option("--latency-seconds", o.latency_seconds, "length of the latency phase (0 skips it)")
      ->capture_default_str()->check(CLI::Range(0, 3600));
  b->add_option("--jobhost", o.jobhost_bin, "jobhost binary")->capture_default_str();
  b->add_option("--plugin", o.plugin, "noop plugin library")->capture_default_str();
  b->add_flag("--keep", o.keep, "keep the database, Redis keys, configs and logs");
  b->add_flag("--floor", o.floor,
              "then run the PostgreSQL floor: the host's claim, lease and completion statements on the same jobs "
              "count, back to back with no Redis and no handler, and print the drain as a fraction of it");
  b->add_option("--history", o.history,
                "first fill the table with N finished jobs (40 days old, a job_logs row each), vacuumed")
      ->check(CLI::Range(0L, 100000000L));
  b->add_flag("--batch-jobs", o.in_batch, "enqueue every job into one batch (jobhost.batch_open), closed after the enqueue");
  b->add_option("--max-in-redis", o.max_in_redis,
                "the host's migrator.max_in_redis (0: its default, " + std::to_string(Config{}.migrator_max_in_redis) + ")")
      ->check(CLI::Range(0, 10000000));
  b->add_option("--flow-keys", o.flow_keys, "spread the jobs over N flow keys (flow.key /k); 0: no flow: block")
      ->capture_default_str()->check(CLI::Range(0, 10000000));
  b->add_option("--per-key-concurrency", o.per_key_concurrency, "with --flow-keys: each key's running jobs at most")
      ->check(CLI::Range(0, 100000));
  b->add_option("--soak", o.soak_minutes,
                "instead of the phases above: --rate jobs/s for MINUTES (fractions too) with a transaction held open "
                "in the same database, reported minute by minute")
      ->check(CLI::Range(0.0, 1440.0));
  b->add_flag("--latency-during-drain", o.latency_during_drain,
              "run the latency phase while the drain runs (with --flow-keys: under a key of its own)");
  b->callback([&] {
    action = [&] {
      std::signal(SIGINT, on_interrupt);
      std::signal(SIGTERM, on_interrupt);
      return run_bench(o, database_url, redis_url);
    };
  });
}

}  // namespace jobhost::ctl
