// export_data: the job type "export.data". Writes one tenant's contacts or
// email events as CSV under the export root, records the file in app.exports
// and notifies the tenant ("export.completed").
//
// Payload: {"tenant_id": "...", "kind": "contacts" | "email_events",
//           "list_id"?: "..." (contacts only), "campaign_id"?: "..." (email_events only)}.
// Settings: export_root (required: an existing directory), expire_after_hours
// (how long the file is kept, default 168), database_url (required),
// db_pool_size (default 2); any other key is refused.
//
// The file appears atomically: PostgreSQL streams COPY (...) TO STDOUT into
// <root>/<tenant>/<kind>-<job id>.csv.tmp<attempt>, which is fsynced and renamed
// to <kind>-<job id>.csv while the job's app.exports row is locked, in the
// transaction that marks it completed. Rows, bytes and SHA-256 are computed from
// the bytes as they are written. A retried job whose export is completed
// already does nothing; a retry after a crash removes the temporary files of
// earlier attempts and starts again.
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <libpq-fe.h>
#include <openssl/evp.h>

// An export that failed on a full disk or a database outage is worth retrying
// for a while; the file is rewritten from scratch each time.
#define JOBHOST_PLUGIN_DEFAULT_RETRY R"({"max_attempts": 5, "base_ms": 5000, "max_ms": 600000})"
#include <jobhost/plugin.hpp>
#include <jobhost_plugins/hex.hpp>
#include <jobhost_plugins/notify.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

namespace {

namespace fs = std::filesystem;
using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;

constexpr const char* kTenantExists = "SELECT 1 FROM app.tenants WHERE id = $1";
constexpr const char* kListExists = "SELECT 1 FROM app.contact_lists WHERE tenant_id = $1 AND id = $2";
constexpr const char* kCampaignExists = "SELECT 1 FROM app.campaigns WHERE tenant_id = $1 AND id = $2";

constexpr const char* kExportStatus =
    "SELECT status FROM app.exports WHERE tenant_id = $1 AND job_id = $2::uuid";
constexpr const char* kLockExport =
    "SELECT status FROM app.exports WHERE tenant_id = $1 AND job_id = $2::uuid FOR UPDATE";
constexpr const char* kStartExport =
    "INSERT INTO app.exports (job_id, tenant_id, kind, params, status) "
    "VALUES ($1::uuid, $2, $3, $4::jsonb, 'running') "
    "ON CONFLICT (job_id) DO UPDATE SET status = 'running', error = NULL";
constexpr const char* kCompleteExport =
    "UPDATE app.exports SET status = 'completed', path = $3, rows = $4, bytes = $5, sha256 = $6, "
    "error = NULL, finished_at = now(), expires_at = now() + make_interval(hours => $7) "
    "WHERE tenant_id = $1 AND job_id = $2::uuid "
    "RETURNING to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
constexpr const char* kFailExport =
    "UPDATE app.exports SET status = 'failed', error = $3, finished_at = now() "
    "WHERE tenant_id = $1 AND job_id = $2::uuid AND status = 'running'";

// Timestamps are written as UTC ISO 8601, whatever the session's TimeZone and DateStyle.
#define JOBHOST_EXPORT_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

constexpr const char* kContactsSelect =
    "SELECT c.id, c.email, c.name, c.attributes, " JOBHOST_EXPORT_UTC("c.created_at") " AS created_at "
    "FROM app.contacts c WHERE c.tenant_id = ";
constexpr const char* kContactsInList =
    " AND EXISTS (SELECT 1 FROM app.contact_list_members m "
    "WHERE m.tenant_id = c.tenant_id AND m.contact_id = c.id AND m.list_id = ";
constexpr const char* kEventsSelect =
    "SELECT e.id AS event_id, " JOBHOST_EXPORT_UTC("e.created_at") " AS created_at, e.event, e.recipient, "
    "e.campaign_id, m.template_id, m.subject, m.status AS message_status, m.provider, "
    "m.message_id, e.detail "
    "FROM app.email_events e JOIN app.email_messages m ON m.tenant_id = e.tenant_id AND m.id = e.message_id "
    "WHERE e.tenant_id = ";

// Tenant ids name a directory: nothing that could climb out of the export root.
std::string tenant_path_problem(const std::string& t) {
  if (t == "." || t == "..") return "payload.tenant_id: must not be '.' or '..'";
  for (const char c : t) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
      return "payload.tenant_id: may hold only letters, digits, '_', '-' and '.' (it names a directory)";
    }
  }
  return {};
}

std::string errno_text(int e) { return std::strerror(e); }

// A file being written, with its running SHA-256. Removed at destruction unless
// committed (renamed away).
class TempFile {
 public:
  explicit TempFile(fs::path path) : path_(std::move(path)), md_(EVP_MD_CTX_new()) {
    if (md_ == nullptr || EVP_DigestInit_ex(md_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(md_);
      throw std::runtime_error("export: cannot start a SHA-256 digest");
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd_ < 0) {
      const int e = errno;
      EVP_MD_CTX_free(md_);
      throw std::runtime_error("export_root: cannot create '" + path_.string() + "': " + errno_text(e));
    }
    buffer_.reserve(kBufferSize);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!kept_) {
      std::error_code ec;
      fs::remove(path_, ec);
    }
    EVP_MD_CTX_free(md_);
  }

  void append(const char* data, size_t n) {
    if (EVP_DigestUpdate(md_, data, n) != 1) throw std::runtime_error("export: SHA-256 update failed");
    bytes_ += n;
    buffer_.append(data, n);
    if (buffer_.size() >= kBufferSize) flush();
  }

  // Everything on disk (fsync), the file closed; returns the hex digest.
  std::string finish() {
    flush();
    if (::fsync(fd_) != 0) fail("syncing");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("closing");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(md_, digest, &len) != 1) throw std::runtime_error("export: SHA-256 final failed");
    return jobhost_plugins::hex(digest, len);
  }

  void keep() { kept_ = true; }
  const fs::path& path() const { return path_; }
  long long bytes() const { return bytes_; }

 private:
  static constexpr size_t kBufferSize = 256 * 1024;

  void flush() {
    const char* p = buffer_.data();
    size_t left = buffer_.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("writing");
      p += n;
      left -= static_cast<size_t>(n);
    }
    buffer_.clear();
  }

  [[noreturn]] void fail(const char* what) const {
    throw std::runtime_error("export_root: " + std::string(what) + " '" + path_.string() + "' failed: " +
                             errno_text(errno));
  }

  fs::path path_;
  int fd_ = -1;
  EVP_MD_CTX* md_;
  std::string buffer_;
  long long bytes_ = 0;
  bool kept_ = false;
};

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("export_root: cannot open '" + dir.string() + "': " + errno_text(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("export_root: syncing '" + dir.string() + "' failed: " + errno_text(e));
}

struct PgConnCloser {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultClearer {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgConnPtr = std::unique_ptr<PGconn, PgConnCloser>;
using PgResultPtr = std::unique_ptr<PGresult, PgResultClearer>;

// A literal for COPY's query, which takes no parameters: escaped by libpq for
// this connection's encoding, never spliced raw.
std::string literal(PGconn* conn, const std::string& value) {
  char* q = PQescapeLiteral(conn, value.data(), value.size());
  if (q == nullptr) throw std::runtime_error(std::string("export: cannot quote a value: ") + PQerrorMessage(conn));
  std::string out(q);
  PQfreemem(q);
  return out;
}

std::string trimmed_error(PGconn* conn) {
  std::string e = PQerrorMessage(conn);
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e;
}

struct ExportRequest {
  std::string tenant, kind;
  std::optional<std::string> list_id, campaign_id;
};

const jobhost_plugins::SettingsReader::Keys kKeys = {"export_root", "expire_after_hours", "database_url",
                                                     "db_pool_size"};

fs::path export_root(const jobhost_plugins::SettingsReader& s) {
  const fs::path root = s.required_string("export_root");
  std::error_code ec;
  if (root.empty()) s.fail("export_root", "must not be empty");
  if (!fs::exists(root, ec)) s.fail("export_root", "'" + root.string() + "' does not exist");
  if (!fs::is_directory(root, ec)) s.fail("export_root", "'" + root.string() + "' is not a directory");
  return fs::canonical(root);
}

class ExportData : public jobhost::sdk::Plugin {
 public:
  explicit ExportData(const Settings& settings)
      : ExportData(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit ExportData(const jobhost_plugins::SettingsReader& s)
      : root_(export_root(s)),
        expire_after_hours_(static_cast<int>(s.integer("expire_after_hours", 168, 1, 24 * 366))),
        pool_(s, 2) {}

  std::string validate(std::string_view, const nlohmann::json& p) override {
    using namespace jobhost_plugins;
    if (auto e = first_error(need_string(p, "tenant_id", 200), need_string(p, "kind", 100),
                             opt_string(p, "list_id", 200), opt_string(p, "campaign_id", 200));
        !e.empty()) {
      return e;
    }
    if (auto e = tenant_path_problem(p["tenant_id"]); !e.empty()) return e;
    const std::string kind = p["kind"];
    if (kind != "contacts" && kind != "email_events") {
      return "payload.kind: must be \"contacts\" or \"email_events\", not \"" + kind + "\"";
    }
    if (p.contains("list_id") && kind != "contacts") return "payload.list_id: applies only to kind \"contacts\"";
    if (p.contains("campaign_id") && kind != "email_events") {
      return "payload.campaign_id: applies only to kind \"email_events\"";
    }
    return {};
  }

  Result handle(Job& job) override {
    const nlohmann::json& p = job.payload();
    ExportRequest req{p["tenant_id"], p["kind"], std::nullopt, std::nullopt};
    if (p.contains("list_id")) req.list_id = p["list_id"].get<std::string>();
    if (p.contains("campaign_id")) req.campaign_id = p["campaign_id"].get<std::string>();
    try {
      return run(job, req);
    } catch (const std::exception& e) {
      if (job.attempt() >= job.max_attempts()) record_failure(job, req, e.what());
      throw;
    }
  }

 private:
  Result run(Job& job, const ExportRequest& req) {
    const std::string job_id(job.id());
    {
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      if (tx.exec_params(kTenantExists, req.tenant).empty()) {
        return Result::permanent("payload.tenant_id: no tenant '" + req.tenant + "'");
      }
      if (req.list_id && tx.exec_params(kListExists, req.tenant, *req.list_id).empty()) {
        return Result::permanent("payload.list_id: no list '" + *req.list_id + "' for tenant '" + req.tenant + "'");
      }
      if (req.campaign_id && tx.exec_params(kCampaignExists, req.tenant, *req.campaign_id).empty()) {
        return Result::permanent("payload.campaign_id: no campaign '" + *req.campaign_id + "' for tenant '" +
                                 req.tenant + "'");
      }
      const pqxx::result existing = tx.exec_params(kExportStatus, req.tenant, job_id);
      if (!existing.empty() && std::string(existing[0][0].c_str()) == "completed") {
        job.log_info("export " + job_id + " is completed already; nothing to do");
        return Result::ok();
      }
      tx.exec_params(kStartExport, job_id, req.tenant, req.kind, job.payload().dump());
      tx.commit();
    }

    // The root was checked at start; say so clearly if it went away since,
    // rather than recreating a mount point's directory.
    std::error_code ec;
    if (!fs::is_directory(root_, ec)) {
      throw std::runtime_error("settings.export_root: '" + root_.string() + "' is not a directory any more");
    }
    const fs::path dir = root_ / req.tenant;
    fs::create_directory(dir, ec);
    if (std::error_code dir_ec; !fs::is_directory(dir, dir_ec)) {
      throw std::runtime_error("export_root: cannot create directory '" + dir.string() + "': " +
                               (fs::exists(dir, dir_ec) ? std::string("a file of that name is in the way")
                                                        : ec.message()));
    }
    const std::string name = req.kind + "-" + job_id + ".csv";
    remove_leftovers(job, dir, name + ".tmp");

    TempFile file(dir / (name + ".tmp" + std::to_string(job.attempt())));
    const std::optional<long long> rows = copy_into(job, req, file);
    if (!rows) {
      return Result::retry("export " + job_id + ": stopped as asked; the next attempt starts the file again");
    }
    const std::string sha256 = file.finish();

    auto conn = pool_.acquire();
    pqxx::work tx(*conn);
    // The lock orders this attempt against any other of the same job: only one
    // renames its file into place and records it.
    const pqxx::result locked = tx.exec_params(kLockExport, req.tenant, job_id);
    if (!locked.empty() && std::string(locked[0][0].c_str()) == "completed") {
      job.log_info("export " + job_id + " was completed by another attempt meanwhile");
      return Result::ok();
    }
    const fs::path final_path = dir / name;
    fs::rename(file.path(), final_path, ec);
    if (ec) {
      throw std::runtime_error("export_root: cannot rename '" + file.path().string() + "' to '" +
                               final_path.string() + "': " + ec.message());
    }
    file.keep();
    fsync_dir(dir);
    const std::string relative = (fs::path(req.tenant) / name).string();
    const pqxx::row done = tx.exec_params1(kCompleteExport, req.tenant, job_id, relative, *rows, file.bytes(),
                                           sha256, expire_after_hours_);
    nlohmann::json data = {{"export_id", job_id}, {"kind", req.kind},   {"path", relative},
                           {"rows", *rows},       {"bytes", file.bytes()}, {"sha256", sha256},
                           {"expires_at", done[0].c_str()}};
    if (req.list_id) data["list_id"] = *req.list_id;
    if (req.campaign_id) data["campaign_id"] = *req.campaign_id;
    const int endpoints = jobhost_plugins::notify(tx, req.tenant, "export.completed", job_id, data);
    tx.commit();
    job.log_info("export " + job_id + ": " + std::to_string(*rows) + " rows, " + std::to_string(file.bytes()) +
                 " bytes to " + relative + " (" + std::to_string(endpoints) + " webhook endpoints notified)");
    return Result::ok();
  }

  // Temporary files of earlier attempts of this job (a crash or kill left them).
  static void remove_leftovers(Job& job, const fs::path& dir, const std::string& prefix) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string file = entry.path().filename().string();
      if (file.rfind(prefix, 0) == 0) {
        fs::remove(entry.path(), ec);
        job.log_info("removed the leftover temporary file " + entry.path().string());
      }
    }
  }

  // Streams the COPY into file; returns the number of data rows, or nullopt if
  // the host asked the attempt to stop.
  std::optional<long long> copy_into(Job& job, const ExportRequest& req, TempFile& file) {
    // Our own connection, not the pool's: libpqxx 6.4 cannot stream the COPY
    // of a query, libpq can, and the connection dies with the attempt.
    const char* keys[] = {"dbname", "application_name", nullptr};
    const char* values[] = {pool_.url().c_str(), "jobhost export_data", nullptr};
    PgConnPtr conn(PQconnectdbParams(keys, values, 1));
    if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
      throw std::runtime_error("export: cannot connect to PostgreSQL: " +
                               (conn ? trimmed_error(conn.get()) : std::string("out of memory")));
    }
    const std::string tenant = literal(conn.get(), req.tenant);
    std::string query;
    if (req.kind == "contacts") {
      query = kContactsSelect + tenant;
      if (req.list_id) query += kContactsInList + literal(conn.get(), *req.list_id) + ")";
      query += " ORDER BY c.id";
    } else {
      query = kEventsSelect + tenant;
      if (req.campaign_id) query += " AND e.campaign_id = " + literal(conn.get(), *req.campaign_id);
      query += " ORDER BY e.id";
    }
    const std::string copy = "COPY (" + query + ") TO STDOUT WITH (FORMAT csv, HEADER)";

    PgResultPtr started(PQexec(conn.get(), copy.c_str()));
    if (PQresultStatus(started.get()) != PGRES_COPY_OUT) {
      throw std::runtime_error("export: COPY failed: " + trimmed_error(conn.get()));
    }
    // libpq hands over one CSV row per buffer (the header first), so counting
    // buffers counts rows even when a field holds a newline.
    long long buffers = 0;
    auto last_beat = std::chrono::steady_clock::now();
    for (;;) {
      char* row = nullptr;
      const int n = PQgetCopyData(conn.get(), &row, 0);
      if (n == -1) break;
      if (n < 0) throw std::runtime_error("export: reading the COPY stream failed: " + trimmed_error(conn.get()));
      std::unique_ptr<char, decltype(&PQfreemem)> owned(row, &PQfreemem);
      file.append(row, static_cast<size_t>(n));
      if (++buffers % 1024 == 0) {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_beat > std::chrono::seconds(1)) {
          if (job.cancelled()) return std::nullopt;  // closing the connection ends the COPY
          job.heartbeat();
          last_beat = now;
        }
      }
    }
    PgResultPtr finished(PQgetResult(conn.get()));
    if (PQresultStatus(finished.get()) != PGRES_COMMAND_OK) {
      throw std::runtime_error("export: COPY failed: " + trimmed_error(conn.get()));
    }
    return buffers > 0 ? buffers - 1 : 0;
  }

  void record_failure(Job& job, const ExportRequest& req, const std::string& error) {
    try {
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      tx.exec_params(kFailExport, req.tenant, std::string(job.id()), error);
      tx.commit();
    } catch (const std::exception& e) {
      job.log_warn("export " + std::string(job.id()) + ": could not record its failure: " + e.what());
    }
  }

  const fs::path root_;
  const int expire_after_hours_;
  jobhost_plugins::PgPool pool_;
};

}  // namespace

JOBHOST_PLUGIN(ExportData, "export_data", "1.1.0", "export.data")
