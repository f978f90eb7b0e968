// harness.hpp: what integration and end-to-end tests share. Each test gets its
// own database (created and migrated here) and its own Redis key prefix on the
// servers scripts/test.sh started, so tests never see each other's jobs; and
// real jobhost / jobctl processes, started and ended by PID.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pqxx/pqxx>

namespace jobhost::test {

using namespace std::chrono_literals;

// Build-time locations (set by tests/CMakeLists.txt).
std::string bin_dir();
std::string plugin_dir();
std::string source_dir();

// A fresh database with the jobhost schema, dropped at destruction, and a
// Redis key prefix of its own.
class TestDb {
 public:
  TestDb();
  ~TestDb();
  const std::string& url() const { return url_; }
  const std::string& redis_url() const { return redis_url_; }
  const std::string& prefix() const { return prefix_; }

  pqxx::connection& conn();
  // Runs a query and returns the first column of the first row as text ("" when NULL/none).
  std::string scalar(const std::string& sql);
  long long count(const std::string& sql) { return std::stoll(scalar(sql)); }
  // Enqueues through jobhost.enqueue(); returns the id.
  std::string enqueue(const std::string& type, const std::string& payload = "{}", int priority = 100,
                      std::optional<int> max_attempts = std::nullopt);
  // Enqueues n jobs in one statement.
  void enqueue_many(const std::string& type, const std::string& payload, int n, int priority = 100);
  std::string status(const std::string& id);
  // One column of a job's row, as text.
  std::string field(const std::string& id, const std::string& column);
  // Milliseconds from the end of attempt n to the start of attempt n + 1.
  double retry_gap_ms(const std::string& id, int attempt);

 private:
  std::string admin_url_;
  std::string name_;
  std::string url_;
  std::string redis_url_;
  std::string prefix_;
  std::unique_ptr<pqxx::connection> conn_;
};

// Settings of a generated host config; the defaults suit fast tests.
struct HostOptions {
  std::string roles = "[migrator, worker, reaper]";
  int concurrency = 4;
  int max_attempts = 3;
  long base_ms = 50;
  long max_ms = 1000;
  long timeout_ms = 30000;
  long lease_ms = 2000;
  long heartbeat_ms = 300;
  long stale_after_ms = 1000;
  long reconciler_interval_ms = 300;
  long reaper_interval_ms = 200;
  long poll_ms = 200;
  int batch_size = 500;
  int max_in_redis = 20000;
  bool direct_lease = true;  // host.migrator.direct_lease
  long shutdown_grace_ms = 5000;
  std::string library;      // default: the noop plugin
  std::string redis_url;    // default: the TestDb's
  std::string host_yaml;    // appended verbatim inside host: (indent by 2)
  std::string plugin_yaml;  // appended verbatim inside the noop plugin's entry (indent by 4)
  std::string extra_yaml;   // appended verbatim
};

// Writes a config file for db into a temp folder; returns its path.
std::string write_config(const TestDb& db, const HostOptions& o, const std::string& tag = "host");

// A running child process with stdout+stderr captured to a file.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path,
          const std::vector<std::string>& env = {});
  ~Process();  // SIGKILLs the child if it still runs
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int sig);
  void kill9() { signal(9); }
  // Waits for exit; returns the exit code, or 128+signal; nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  bool running();
  std::string log() const;
  // Waits until the captured output contains text.
  bool wait_for_log(const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::string log_path_;
};

// Starts `jobhost --config FILE` and waits until it logs "ready".
std::unique_ptr<Process> start_host(const std::string& config, const std::string& tag = "host");

// Runs a program to completion; returns {exit code, output}.
std::pair<int, std::string> run(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env = {},
                                std::chrono::milliseconds timeout = 60s);

// Polls pred every 50 ms until true or timeout; returns the last value.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// The most attempts that ran at once, from the completed job_logs rows that
// match `where` (their started_at to finished_at intervals).
int peak_running(TestDb& db, const std::string& where = "true");

}  // namespace jobhost::test
