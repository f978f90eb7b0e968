// pg.hpp: PostgreSQL helpers shared by the moving parts: array parameters for
// batched statements, and connecting with a clear error.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqxx/pqxx>

namespace jobhost {

// Builds a PostgreSQL array literal ("{...}") to bind as one text parameter
// and cast in SQL ($1::uuid[]). One round trip then carries a whole batch.
class PgArray {
 public:
  void add(std::string_view text);  // quoted and escaped
  void add(long long number);
  void add_null();
  std::string str() const { return out_ + "}"; }
  bool empty() const { return count_ == 0; }

 private:
  void sep();
  std::string out_ = "{";
  size_t count_ = 0;
};

// Opens a connection; throws std::runtime_error that names the URL (without
// its password) when it fails.
std::unique_ptr<pqxx::connection> pg_connect(const std::string& url);

// The URL with any password replaced by "***", for messages and logs.
std::string redact_url(const std::string& url);

// A small pool of connections for short statements from many threads
// (e.g. follow-up enqueues from plugins). Broken connections are replaced.
class PgPool {
 public:
  PgPool(std::string url, size_t size) : url_(std::move(url)), size_(size) {}

  // Runs fn(connection) with a pooled connection, reconnecting once if the
  // connection turns out broken.
  template <typename Fn>
  auto with(Fn&& fn) {
    auto conn = acquire();
    try {
      auto result = fn(*conn);
      release(std::move(conn));
      return result;
    } catch (const pqxx::broken_connection&) {
      conn.reset();  // dropped, not returned
      throw;
    }
  }

 private:
  std::unique_ptr<pqxx::connection> acquire();
  void release(std::unique_ptr<pqxx::connection> conn);

  std::string url_;
  size_t size_;
  std::mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
};

// Whether exec_hot() may use named prepared statements: not when postgres.url
// goes through a transaction-mode pooler (postgres.pooler: transaction), where
// a statement prepared on one server connection is unknown on the next (and
// PgBouncer 1.18, Debian 12's, cannot carry them across). Set once at start.
void set_prepared_statements(bool enabled);
bool prepared_statements();

// For a connection that runs the hot-path statements (claim, lease,
// completion, lease extension), while they are prepared (above): plans
// without sequential scans (SET enable_seqscan = off for the session).
// Why: a prepared statement keeps the generic plan made at its sixth run on
// that connection. Made while jobhost.jobs was still small (a new install, a
// host started on an empty queue), that plan reads the whole table, and the
// table may hold a hundred thousand rows a few seconds later: each lease and
// completion then took 10-25 ms instead of well under one, and a soak at
// 8,000 jobs/s fell to 2,000 a second for up to a minute, until an ANALYZE
// replaced the plans. Every hot statement has an index path (the primary key
// or the partial index of its state), so only that choice changes. Behind a
// transaction-mode pooler the statements are planned on every call (and a
// session setting would leak to other clients): nothing is set.
void hot_path_session(pqxx::connection& conn);

// Runs a hot-path statement as a prepared statement of the transaction's
// connection: parsed and planned once per connection, not on every call.
// `name` must be unique to `sql` (prepare() refuses a changed definition).
// Without prepared statements, the same SQL as one parameterised statement
// (the unnamed statement, parsed and run in one round trip).
template <typename... Args>
pqxx::result exec_hot(pqxx::transaction_base& tx, const char* name, const char* sql,
                      Args&&... args) {
  if (!prepared_statements()) return tx.exec_params(sql, std::forward<Args>(args)...);
  tx.conn().prepare(name, sql);  // registers once; later calls compare and return
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

// A FROM item that lets the statement's own transaction commit without
// waiting for its WAL to reach disk: SET LOCAL synchronous_commit = off, as
// the function, because an autocommit statement has no block for SET LOCAL
// and a transaction-mode pooler keeps no session setting. For the writes of
// intermediate states only (claim, lease, lease extension, unclaim): a crash
// of PostgreSQL loses at most the last fraction of a second of them, and the
// reconciler and reaper rebuild what was lost (README "Durability of the
// intermediate states"). Every later durable commit flushes them too (WAL is
// written in order), so a terminal write, which stays synchronous, is never
// on disk without the lease it ends.
inline constexpr const char* kAsyncCommitFrom =
    "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit(setting)";

// The SQL that enqueues one job: the same function producers call. Parameters:
// type, payload, priority, run_at ('' = now), delay_ms added to run_at,
// max_attempts (0 = the queue's default), unique_key ('' = none), flow_key
// (NULL = from the payload by the queue's flow.key), batch_id ('' = none).
inline constexpr const char* kEnqueueSql =
    "SELECT jobhost.enqueue($1, $2::jsonb, $3, coalesce(NULLIF($4, '')::timestamptz, now()) + "
    "$5 * interval '1 millisecond', NULLIF($6, 0), NULLIF($7, ''), $8::text, NULLIF($9, '')::uuid)";

}  // namespace jobhost
