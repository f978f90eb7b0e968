// pgbouncer.hpp: a real PgBouncer (Debian's pgbouncer) in transaction pooling
// mode in front of the test server, on a free loopback port, for one test.
#pragma once

#include <memory>
#include <string>

#include "harness.hpp"

namespace jobhost::test {

class PgBouncer {
 public:
  // pool_size server connections per database and user: fewer than the
  // host's clients, so they really are shared between transactions.
  explicit PgBouncer(const TestDb& db, int pool_size = 3);
  ~PgBouncer();

  std::string url() const;  // db.url() through PgBouncer
  // A figure of SHOW STATS (e.g. "total_xact_count") for the test's database.
  long long stat(const std::string& column) const;
  std::string log() const { return process_->log(); }

 private:
  std::string user_, host_, database_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace jobhost::test
