// harness.cpp: test databases, generated configs and child processes.
#include "harness.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "migrations.hpp"

namespace jobhost::test {
namespace {

std::string env_or_throw(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(std::string(name) + " is not set: run the tests through scripts/test.sh");
  }
  return v;
}

std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 10; ++i) s += hex[rng() % 16];
  return s;
}

// postgresql://user@host:port/db → same URL with another database.
std::string with_database(const std::string& url, const std::string& db) {
  const auto slash = url.rfind('/');
  return url.substr(0, slash + 1) + db;
}

std::filesystem::path temp_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("jobhost-tests-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

}  // namespace

std::string bin_dir() { return JOBHOST_TEST_BIN_DIR; }
std::string plugin_dir() { return JOBHOST_TEST_PLUGIN_DIR; }
std::string source_dir() { return JOBHOST_TEST_SOURCE_DIR; }

TestDb::TestDb()
    : admin_url_(env_or_throw("DATABASE_URL")),
      name_("jh_test_" + random_suffix()),
      url_(with_database(admin_url_, name_)),
      redis_url_(env_or_throw("REDIS_URL")),
      prefix_("t" + name_.substr(8)) {
  {
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec("CREATE DATABASE " + name_);
  }
  conn_ = std::make_unique<pqxx::connection>(url_);
  migrate(*conn_);
}

TestDb::~TestDb() {
  try {
    conn_.reset();
    pqxx::connection admin(admin_url_);
    pqxx::nontransaction tx(admin);
    tx.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  } catch (...) {
    // A test database left behind is harmless; the run's cluster is thrown away.
  }
}

pqxx::connection& TestDb::conn() {
  if (!conn_ || !conn_->is_open()) conn_ = std::make_unique<pqxx::connection>(url_);
  return *conn_;
}

std::string TestDb::scalar(const std::string& sql) {
  pqxx::nontransaction tx(conn());
  const auto r = tx.exec(sql);
  if (r.empty() || r[0][0].is_null()) return "";
  return r[0][0].c_str();
}

std::string TestDb::enqueue(const std::string& type, const std::string& payload, int priority,
                            std::optional<int> max_attempts) {
  pqxx::work tx(conn());
  const auto row = tx.exec_params1(
      "SELECT jobhost.enqueue($1, $2::jsonb, $3, now(), NULLIF($4, 0))", type, payload, priority,
      max_attempts.value_or(0));
  tx.commit();
  return row[0].c_str();
}

void TestDb::enqueue_many(const std::string& type, const std::string& payload, int n, int priority) {
  pqxx::work tx(conn());
  tx.exec_params(
      "INSERT INTO jobhost.jobs (queue_name, payload, priority) "
      "SELECT $1, $2::jsonb, $3 FROM generate_series(1, $4)",
      type, payload, priority, n);
  tx.commit();
}

std::string TestDb::status(const std::string& id) { return field(id, "status"); }

std::string TestDb::field(const std::string& id, const std::string& column) {
  return scalar("SELECT " + column + " FROM jobhost.jobs WHERE id = '" + id + "'");
}

double TestDb::retry_gap_ms(const std::string& id, int attempt) {
  return std::stod(scalar(
      "SELECT extract(epoch FROM b.started_at - a.finished_at) * 1000 FROM jobhost.job_logs a "
      "JOIN jobhost.job_logs b ON b.job_id = a.job_id AND b.attempt_number = a.attempt_number + 1 "
      "WHERE a.job_id = '" + id + "' AND a.attempt_number = " + std::to_string(attempt)));
}

std::string write_config(const TestDb& db, const HostOptions& o, const std::string& tag) {
  const std::string library = o.library.empty() ? plugin_dir() + "/libnoop.so" : o.library;
  std::ostringstream y;
  y << "postgres: { url: \"" << db.url() << "\", pool_size: 4 }\n"
    << "redis: { url: \"" << (o.redis_url.empty() ? db.redis_url() : o.redis_url)
    << "\", key_prefix: \"" << db.prefix() << "\" }\n"
    << "host:\n"
    << "  id: " << tag << "\n"
    << "  roles: " << o.roles << "\n"
    << "  migrator: { batch_size: " << o.batch_size << ", poll_interval_ms: " << o.poll_ms
    << ", max_in_redis: " << o.max_in_redis << ", direct_lease: " << (o.direct_lease ? "true" : "false") << " }\n"
    << "  lease: { duration_ms: " << o.lease_ms << ", heartbeat_ms: " << o.heartbeat_ms << " }\n"
    << "  reaper: { interval_ms: " << o.reaper_interval_ms << " }\n"
    << "  reconciler: { interval_ms: " << o.reconciler_interval_ms
    << ", stale_after_ms: " << o.stale_after_ms << " }\n"
    << "  shutdown_grace_ms: " << o.shutdown_grace_ms << "\n"
    << o.host_yaml
    << "log: { level: info }\n"
    << "plugins:\n"
    << "  - name: noop\n"
    << "    library: " << library << "\n"
    << "    job_types: [noop]\n"
    << "    concurrency: { min: 1, max: " << o.concurrency << " }\n"
    << "    retry: { max_attempts: " << o.max_attempts << ", base_ms: " << o.base_ms
    << ", max_ms: " << o.max_ms << " }\n"
    << "    timeout_ms: " << o.timeout_ms << "\n"
    << o.plugin_yaml
    << o.extra_yaml;
  const auto path = temp_dir() / (db.prefix() + "-" + tag + ".yaml");
  std::ofstream(path) << y.str();
  return path.string();
}

Process::Process(const std::vector<std::string>& argv, const std::string& log_path,
                 const std::vector<std::string>& env)
    : log_path_(log_path) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    // The test runner may block signals; the child starts clean.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (running()) {
    kill(pid_, SIGKILL);
    wait(5s);
  }
}

void Process::signal(int sig) {
  if (!exit_code_) kill(pid_, sig);
}

bool Process::running() {
  if (exit_code_) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return false;
  }
  return true;
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  return exit_code_;
}

std::string Process::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Process::wait_for_log(const std::string& text, std::chrono::milliseconds timeout) const {
  return eventually([&] { return log().find(text) != std::string::npos; }, timeout);
}

std::unique_ptr<Process> start_host(const std::string& config, const std::string& tag) {
  static int n = 0;
  const auto log = temp_dir() / (tag + "-" + std::to_string(++n) + ".log");
  auto p = std::make_unique<Process>(std::vector<std::string>{bin_dir() + "/jobhost", "--config", config},
                                     log.string());
  if (!p->wait_for_log(" ready", 20s)) {
    throw std::runtime_error("jobhost did not become ready; its output:\n" + p->log());
  }
  return p;
}

std::pair<int, std::string> run(const std::vector<std::string>& argv,
                                const std::vector<std::string>& env,
                                std::chrono::milliseconds timeout) {
  static int n = 0;
  const auto log = temp_dir() / ("run-" + std::to_string(++n) + ".log");
  Process p(argv, log.string(), env);
  const auto code = p.wait(timeout);
  if (!code) {
    p.kill9();
    return {-1, p.log() + "\n(timed out)"};
  }
  return {*code, p.log()};
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

int peak_running(TestDb& db, const std::string& where) {
  pqxx::nontransaction tx(db.conn());
  std::vector<std::pair<double, int>> e;
  for (const auto& r : tx.exec("SELECT extract(epoch FROM started_at) * 1000, extract(epoch FROM finished_at) * 1000 "
                               "FROM jobhost.job_logs WHERE status = 'completed' AND " + where)) {
    e.emplace_back(r[0].as<double>(), +1);
    e.emplace_back(r[1].as<double>(), -1);
  }
  std::sort(e.begin(), e.end());
  int now = 0, peak = 0;
  for (const auto& [t, d] : e) peak = std::max(peak, now += d);
  return peak;
}

}  // namespace jobhost::test
