// pgbouncer.cpp: see pgbouncer.hpp.
#include "pgbouncer.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>
#include <stdexcept>
#include <thread>

#include <pqxx/pqxx>

namespace jobhost::test {
namespace {

// A port nobody listens on now (the kernel's choice for port 0).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    throw std::runtime_error("no free loopback port");
  }
  close(fd);
  return ntohs(a.sin_port);
}

}  // namespace

PgBouncer::PgBouncer(const TestDb& db, int pool_size) {
  std::smatch m;
  const std::string url = db.url();
  if (!std::regex_match(url, m, std::regex(R"(postgres(?:ql)?://(?:([^@/:]*)@)?([^:/]+):([0-9]+)/([^?]+))"))) {
    throw std::runtime_error("PgBouncer: cannot read host, port and database from " + url);
  }
  user_ = m[1].matched && !m[1].str().empty() ? m[1].str() : "postgres";
  host_ = m[2];
  database_ = m[4];
  port_ = free_port();
  const auto dir = std::filesystem::temp_directory_path() / ("jobhost-pgbouncer-" + database_);
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::all);  // it may run as postgres
  std::ofstream(dir / "userlist.txt") << "\"" << user_ << "\" \"\"\n";
  std::ofstream(dir / "pgbouncer.ini")
      << "[databases]\n"
      << database_ << " = host=" << host_ << " port=" << m[3] << " dbname=" << database_ << "\n"
      << "[pgbouncer]\n"
      << "listen_addr = 127.0.0.1\nlisten_port = " << port_ << "\n"
      << "unix_socket_dir =\n"
      << "auth_type = trust\nauth_file = " << (dir / "userlist.txt").string() << "\n"
      << "admin_users = " << user_ << "\n"
      << "pool_mode = transaction\n"
      << "default_pool_size = " << pool_size << "\nmin_pool_size = 0\nreserve_pool_size = 0\n"
      << "max_client_conn = 500\n"
      << "server_reset_query =\n";
  std::vector<std::string> argv = {"/usr/sbin/pgbouncer"};
  if (geteuid() == 0) argv.insert(argv.end(), {"-u", "postgres"});  // it refuses to run as root
  argv.push_back((dir / "pgbouncer.ini").string());
  process_ = std::make_unique<Process>(argv, (dir / "pgbouncer.log").string());
  for (int i = 0; i < 100; ++i) {
    try {
      pqxx::connection c(this->url());
      return;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(50ms);
    }
  }
  throw std::runtime_error("PgBouncer did not accept connections:\n" + process_->log());
}

PgBouncer::~PgBouncer() = default;  // the Process ends it (SIGKILL by PID)

std::string PgBouncer::url() const {
  return "postgresql://" + user_ + "@127.0.0.1:" + std::to_string(port_) + "/" + database_;
}

// Through psql: libpqxx refuses the console, whose server_version is PgBouncer's.
long long PgBouncer::stat(const std::string& column) const {
  const std::string console = "postgresql://" + user_ + "@127.0.0.1:" + std::to_string(port_) + "/pgbouncer";
  const auto [code, out] = run({"/usr/bin/psql", console, "-X", "-A", "-F", "|", "-P", "footer=off", "-c", "SHOW STATS"});
  if (code != 0) throw std::runtime_error("PgBouncer: SHOW STATS failed: " + out);
  std::istringstream lines(out);
  std::vector<std::string> header;
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    std::istringstream row(line);
    for (std::string cell; std::getline(row, cell, '|');) cells.push_back(cell);
    if (header.empty()) {
      header = cells;
      continue;
    }
    if (cells.empty() || cells[0] != database_) continue;
    for (size_t i = 0; i < header.size() && i < cells.size(); ++i) {
      if (header[i] == column) return std::stoll(cells[i]);
    }
  }
  throw std::runtime_error("PgBouncer: no " + column + " for " + database_ + " in\n" + out);
}

}  // namespace jobhost::test
