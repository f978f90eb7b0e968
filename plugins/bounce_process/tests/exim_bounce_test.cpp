// A real MTA's bounce: Debian's Exim (exim4-daemon-light, scripts/setup.sh)
// runs as a daemon on a loopback port of 2600-2699 with its config, spool,
// log and Maildir under this test's temp folder; it is started and stopped by
// PID here. The test hands it a message over SMTP for a user it does not have,
// with the VERP return path email.send uses; Exim bounces it into the Maildir,
// and bounce.process records what Exim wrote.
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>
#include <jobhost/testing.hpp>

#include "harness.hpp"

extern "C" const jobhost_plugin* jobhost_plugin_entry(void);

using namespace jobhost::test;
namespace fs = std::filesystem;

namespace {

std::string exim_binary() {
  if (const char* e = std::getenv("JOBHOST_TEST_EXIM")) return e;
  for (const char* p : {"/usr/sbin/exim4", "/usr/sbin/exim"}) {
    if (fs::exists(p)) return p;
  }
  return {};
}

// A minimal SMTP client: one line out, one reply in; returns the reply's code.
class Smtp {
 public:
  explicit Smtp(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Smtp() { ::close(fd_); }
  bool connected() const { return connected_; }
  int say(const std::string& line) {
    if (!line.empty()) {
      const std::string out = line + "\r\n";
      if (::send(fd_, out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) return -1;
    }
    // A reply ends with a line whose code is followed by a blank ("250 ok"), not "-".
    std::string reply;
    char c;
    while (::recv(fd_, &c, 1, 0) == 1) {
      reply += c;
      if (c != '\n') continue;
      const size_t start = reply.rfind('\n', reply.size() - 2);
      const std::string last = reply.substr(start == std::string::npos ? 0 : start + 1);
      if (last.size() >= 4 && last[3] == ' ') return std::atoi(last.c_str());
    }
    return -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

// Removes the folder when the test ends, passed or not (declared before the
// daemon, so it goes after the daemon is stopped).
struct RemovedAtEnd {
  fs::path path;
  ~RemovedAtEnd() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void chown_tree(const fs::path& dir, const passwd& user) {
  REQUIRE(::chown(dir.c_str(), user.pw_uid, user.pw_gid) == 0);
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    REQUIRE(::chown(e.path().c_str(), user.pw_uid, user.pw_gid) == 0);
  }
}

}  // namespace

TEST_CASE("a real Exim on loopback bounces a message to an unknown user, and bounce.process records it hard, by VERP",
          "[bounce][mta]") {
  const std::string exim = exim_binary();
  INFO("scripts/setup.sh installs Debian's exim4-daemon-light (or set JOBHOST_TEST_EXIM)");
  REQUIRE_FALSE(exim.empty());
  TestDb db;
  const std::string job = "3c9d7e21-5a4b-4c6d-8e0f-1a2b3c4d5e6f";
  db.scalar("INSERT INTO app.tenants (id, name) VALUES ('t1', 'One') RETURNING 1");
  db.scalar("INSERT INTO app.email_messages (tenant_id, job_id, template_id, recipient, status) VALUES "
            "('t1', '" + job + "', 'tpl', 'nosuchuser@local.test', 'sent') RETURNING 1");

  const fs::path dir = fs::temp_directory_path() / (db.prefix() + "-exim");
  fs::remove_all(dir);
  const RemovedAtEnd cleanup{dir};
  for (const char* sub : {"spool", "log", "inbound/tmp", "inbound/new", "inbound/cur"}) fs::create_directories(dir / sub);
  // Run as root, Exim refuses to deliver as root (Debian's FIXED_NEVER_USERS):
  // it delivers as its own user, which then owns the folders. Run as anyone
  // else, the -C option makes it give up its privilege and run as the caller.
  const passwd* pw = ::geteuid() == 0 ? ::getpwnam("Debian-exim") : ::getpwuid(::geteuid());
  REQUIRE(pw != nullptr);
  const passwd user = *pw;
  const std::string user_name = user.pw_name;
  const group* gr = ::getgrgid(user.pw_gid);
  REQUIRE(gr != nullptr);
  const std::string group_name = gr->gr_name;
  const int port = 2600 + static_cast<int>(::getpid() % 100);
  const fs::path conf = dir / "exim.conf";  // owned by the caller
  std::ofstream(conf) << "primary_hostname = mta.test\n"
                         "spool_directory = " << (dir / "spool").string() << "\n"
                         "log_file_path = " << (dir / "log").string() << "/%slog\n"
                         "pid_file_path = " << (dir / "exim.pid").string() << "\n"
                         "exim_user = " << user_name << "\n"
                         "exim_group = " << group_name << "\n"
                         "domainlist local_domains = local.test : bounces.test\n"
                         "daemon_smtp_ports = " << port << "\n"
                         "local_interfaces = 127.0.0.1\n"
                         "acl_smtp_rcpt = acl_check_rcpt\n"
                         "host_lookup =\n"
                         "tls_advertise_hosts =\n"
                         "begin acl\n"
                         "acl_check_rcpt:\n"
                         "  accept domains = +local_domains\n"
                         "  deny message = relay not permitted\n"
                         // local.test has no users at all: every address there is unrouteable.
                         "begin routers\n"
                         "bounces:\n"
                         "  driver = accept\n"
                         "  domains = bounces.test\n"
                         "  transport = inbound_maildir\n"
                         "begin transports\n"
                         "inbound_maildir:\n"
                         "  driver = appendfile\n"
                         "  directory = " << (dir / "inbound").string() << "\n"
                         "  maildir_format\n"
                         "  user = " << user_name << "\n"
                         "  envelope_to_add\n"
                         "  return_path_add\n"
                         "begin retry\n"
                         "* * F,1m,1m\n";
  // Exim reads its config only when no one but root (or the caller) may write it.
  fs::permissions(conf, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
  for (const char* sub : {"spool", "log", "inbound"}) chown_tree(dir / sub, user);
  fs::permissions(dir, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_read | fs::perms::others_exec);

  Process daemon({exim, "-C", conf.string(), "-bdf", "-q1m"}, (dir / "daemon.out").string());
  REQUIRE(eventually([&] { return Smtp(port).connected(); }, 10s));
  {
    Smtp smtp(port);
    REQUIRE(smtp.say("") == 220);
    CHECK(smtp.say("EHLO client.test") == 250);
    CHECK(smtp.say("MAIL FROM:<bounce+" + job + "@bounces.test>") == 250);
    CHECK(smtp.say("RCPT TO:<nosuchuser@local.test>") == 250);  // accepted, bounced later
    CHECK(smtp.say("DATA") == 354);
    CHECK(smtp.say("From: news@sender.test\r\nTo: nosuchuser@local.test\r\nSubject: offers\r\n"
                   "Message-ID: <" + job + "@jobhost>\r\n\r\nHello.\r\n.") == 250);
    smtp.say("QUIT");
  }
  std::string bounce_file;
  const bool arrived = eventually([&] {
    for (const auto& e : fs::directory_iterator(dir / "inbound" / "new")) bounce_file = e.path().filename().string();
    return !bounce_file.empty();
  }, 20s);
  std::ifstream mainlog(dir / "log" / "mainlog");
  std::stringstream log;
  log << mainlog.rdbuf();
  INFO("exim's mainlog:\n" << log.str());
  REQUIRE(arrived);

  jobhost::sdk::testing::Harness h(jobhost_plugin_entry(), {{"database_url", db.url()},
                                                             {"inbound_root", (dir / "inbound").string()}});
  const auto run = h.run({"bounce.process", {{"path", "new/" + bounce_file}}});
  INFO(run.error);
  REQUIRE(run.ok());
  CHECK(db.scalar("SELECT concat_ws('|', tenant_id, recipient, status, kind, job_id, message_id) FROM app.email_bounces") ==
        "t1|nosuchuser@local.test|5.0.0|hard|" + job + "|<" + job + "@jobhost>");
  CHECK(db.scalar("SELECT diagnostic FROM app.email_bounces") == "Unrouteable address");
  CHECK(db.scalar("SELECT reason FROM app.suppressions WHERE email = 'nosuchuser@local.test'") == "bounced");
  CHECK(fs::exists(dir / "inbound" / "cur" / bounce_file));

  daemon.signal(SIGTERM);
  CHECK(daemon.wait(10s).has_value());
}
