// pg.cpp: array literals, connecting, and the connection pool.
#include "pg.hpp"

#include <atomic>
#include <regex>
#include <stdexcept>

namespace jobhost {
namespace {
std::atomic<bool> g_prepared_statements{true};
}  // namespace

void set_prepared_statements(bool enabled) { g_prepared_statements = enabled; }
bool prepared_statements() { return g_prepared_statements; }

void hot_path_session(pqxx::connection& conn) {
  if (!prepared_statements()) return;
  pqxx::nontransaction tx(conn);
  tx.exec0("SET enable_seqscan = off");
}

void PgArray::sep() {
  if (count_++ > 0) out_ += ',';
}

void PgArray::add(std::string_view text) {
  sep();
  out_ += '"';
  for (char c : text) {
    if (c == '"' || c == '\\') out_ += '\\';
    out_ += c;
  }
  out_ += '"';
}

void PgArray::add(long long number) {
  sep();
  out_ += std::to_string(number);
}

void PgArray::add_null() {
  sep();
  out_ += "NULL";
}

std::string redact_url(const std::string& url) {
  static const std::regex password(R"(://([^:/@]*):[^@/]*@)");
  return std::regex_replace(url, password, "://$1:***@");
}

std::unique_ptr<pqxx::connection> pg_connect(const std::string& url) {
  try {
    return std::make_unique<pqxx::connection>(url);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot connect to PostgreSQL at " + redact_url(url) + ": " + e.what());
  }
}

std::unique_ptr<pqxx::connection> PgPool::acquire() {
  {
    std::lock_guard lock(mu_);
    while (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->is_open()) return conn;
    }
  }
  return pg_connect(url_);
}

void PgPool::release(std::unique_ptr<pqxx::connection> conn) {
  std::lock_guard lock(mu_);
  if (idle_.size() < size_ && conn->is_open()) idle_.push_back(std::move(conn));
}

}  // namespace jobhost
