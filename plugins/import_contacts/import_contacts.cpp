// import_contacts: the job type "import.contacts". Streams a CSV of contacts
// into a tenant's list.
//
// Payload: {"file_url", "tenant_id", "list_id", "mapping": {"col_0": "email",
// "col_1": "name", "col_2": "company", ...}, "has_header"?, "encoding"?,
// "delimiter"?}. One column maps to "email", one may map to "name", the others
// to attribute names. encoding: utf-8 (default), windows-1252, iso-8859-1,
// utf-16 (decode.hpp; a BOM wins); delimiter: ",", ";", "\t", "|" or "auto".
// Sources: file:// under settings.import_root only (symlinks resolved before the
// check), and http(s):// streamed through the plugins' HTTP client
// (jobhost_plugins/http_client.hpp: address guard, no proxy, no redirects).
//
// Memory stays flat however large the file: bytes are parsed as they arrive
// (decode.hpp, then csv.hpp) and every batch_size accepted rows are upserted in
// one statement. A bad row (not valid text in the encoding, a NUL, a field over
// max_field_bytes, a bad email) is one rejected row, never the import's end.
// A retried attempt starts over: upserts and list membership are idempotent,
// rejections are keyed by (import, line), the counters are reset, and the
// list's contact_count is recounted at the end rather than incremented.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/email_address.hpp>
#include <jobhost_plugins/http_client.hpp>
#include <jobhost_plugins/notify.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_array.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

#include "csv.hpp"
#include "decode.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
using jobhost_plugins::pg_array;
namespace fs = std::filesystem;

constexpr size_t kKeptRaw = 500;  // bytes of a rejected row kept for the operator
constexpr const char* kCancelled = "cancelled; the next attempt starts over";

// Accepted rows of one batch: contacts upserted, then added to the list. A
// later duplicate of an address in the same batch wins (ON CONFLICT cannot
// touch one row twice in a statement).
constexpr const char* kUpsert = R"SQL(
WITH input AS (
  SELECT * FROM unnest($3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS t(email, name, attributes, n)
), last AS (
  SELECT DISTINCT ON (email) email, name, attributes FROM input ORDER BY email, n DESC
), up AS (
  INSERT INTO app.contacts AS c (tenant_id, email, name, attributes)
  SELECT $1, email, NULLIF(name, ''), attributes FROM last
  ON CONFLICT (tenant_id, email) DO UPDATE
     SET name = coalesce(EXCLUDED.name, c.name), attributes = c.attributes || EXCLUDED.attributes, updated_at = now()
  RETURNING c.id
)
INSERT INTO app.contact_list_members (tenant_id, list_id, contact_id)
SELECT $1, $2, id FROM up ON CONFLICT DO NOTHING)SQL";

constexpr const char* kReject = R"SQL(
INSERT INTO app.import_rejections (tenant_id, import_id, line_number, reason, raw)
SELECT $1, $2::uuid, * FROM unnest($3::bigint[], $4::text[], $5::text[])
ON CONFLICT (import_id, line_number) DO NOTHING)SQL";

constexpr const char* kProgress = R"SQL(
UPDATE app.imports SET rows_total = rows_total + $3, rows_accepted = rows_accepted + $4,
       rows_rejected = rows_rejected + $5
 WHERE tenant_id = $1 AND job_id = $2::uuid)SQL";

// How a delimiter is said in the log and accepted in the payload.
std::string delimiter_name(char d) { return d == '\t' ? "\\t" : std::string(1, d); }

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A failure of the source that a later attempt may not have.
struct Transient : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// One it will (404, a path outside the root): dead-letter now.
struct Permanent : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One attempt's state: the mapping, the batch being filled, the counters.
class Import {
 public:
  Import(Job& job, pqxx::connection& conn, const nlohmann::json& p, size_t batch_size, csv::Options options)
      : job_(job),
        conn_(conn),
        tenant_(p["tenant_id"]),
        list_(p["list_id"]),
        has_header_(p.value("has_header", false)),
        batch_size_(batch_size),
        max_row_bytes_(options.max_row_bytes),
        decoder_(*csv::parse_encoding(p.value("encoding", "utf-8")), [this](std::string_view text) { decoded(text); }),
        reader_([this](csv::Row& row) { take(row); }, options) {
    const std::string d = p.value("delimiter", ",");
    sniffing_ = d == "auto";
    if (!sniffing_) {
      delimiter_ = d[0];
      reader_.set_delimiter(delimiter_);
    }
    for (const auto& [key, target] : p["mapping"].items()) {
      const size_t column = std::stoul(key.substr(4));
      const std::string t = target;
      if (t == "email") email_col_ = column;
      else if (t == "name") name_col_ = column;
      else attributes_.emplace_back(column, t);
    }
  }

  void feed(std::string_view bytes) {
    decoder_.feed(bytes);
    if (job_.cancelled()) throw Transient(kCancelled);
  }
  bool cancelled() const { return job_.cancelled(); }
  void finish() {
    decoder_.finish();
    if (sniffing_) settle_delimiter();
    reader_.finish();
    flush();
  }
  // The ones in effect (known once the first bytes are in).
  std::string encoding() const { return csv::encoding_name(decoder_.encoding()); }
  std::string delimiter() const { return delimiter_name(delimiter_); }
  long long total() const { return total_; }
  long long accepted() const { return accepted_; }
  long long rejected() const { return rejected_; }

 private:
  // UTF-8 text from the decoder; with delimiter "auto" the first line is held
  // back (at most max_row_bytes of it) until the delimiter is decided.
  void decoded(std::string_view text) {
    if (!encoding_said_) {
      encoding_said_ = true;
      reader_.set_encoding_name(encoding());
      if (const std::string declared = job_.payload().value("encoding", "utf-8"); declared != encoding()) {
        job_.log_info("import: the file's byte-order mark says " + encoding() + " (payload.encoding: " + declared + ")");
      }
    }
    if (!sniffing_) return reader_.feed(text);
    head_.append(text);
    if (csv::sniff_delimiter(head_).complete || head_.size() >= max_row_bytes_) settle_delimiter();
  }

  void settle_delimiter() {
    sniffing_ = false;
    delimiter_ = csv::sniff_delimiter(head_).delimiter;
    reader_.set_delimiter(delimiter_);
    job_.log_info("import: delimiter auto: '" + delimiter() + "' chosen from the first line");
    const std::string head = std::move(head_);
    head_.clear();
    reader_.feed(head);
  }

  void take(csv::Row& row) {
    if (has_header_ && !header_skipped_) {
      header_skipped_ = true;
      return;
    }
    ++pending_total_;
    if (!row.problem.empty()) return reject(row, row.problem);
    if (row.fields.size() <= email_col_) {
      return reject(row, "no column col_" + std::to_string(email_col_) + " (email): the row has " +
                             std::to_string(row.fields.size()) + " columns");
    }
    const std::string email = jobhost_plugins::normalize_email(row.fields[email_col_]);
    if (const auto why = jobhost_plugins::email_problem(email)) {
      return reject(row, "email '" + row.fields[email_col_] + "' " + *why);
    }
    emails_.push_back(email);
    names_.push_back(name_col_ < row.fields.size() ? row.fields[name_col_] : "");
    nlohmann::json attrs = nlohmann::json::object();
    for (const auto& [column, name] : attributes_) {
      if (column < row.fields.size()) attrs[name] = row.fields[column];
    }
    attributes_json_.push_back(attrs.dump());
    if (emails_.size() + lines_.size() >= batch_size_) flush();
  }

  void reject(const csv::Row& row, const std::string& reason) {
    std::string raw;
    for (size_t i = 0; i < row.fields.size() && raw.size() < kKeptRaw; ++i) {
      raw += (i ? std::string(1, delimiter_) : "") + row.fields[i];
    }
    if (raw.size() > kKeptRaw) raw.resize(kKeptRaw);
    raw = csv::utf8_sanitized(raw);  // what made the row bad must not make its record fail
    lines_.push_back(std::to_string(row.line));
    reasons_.push_back(reason);
    raws_.push_back(raw);
    if (emails_.size() + lines_.size() >= batch_size_) flush();
  }

  void flush() {
    if (pending_total_ == 0) return;
    pqxx::work tx(conn_);
    if (!emails_.empty()) {
      // An empty name is stored as NULL, so an import without names keeps the known ones.
      tx.exec_params(kUpsert, tenant_, list_, pg_array(emails_), pg_array(names_), pg_array(attributes_json_));
    }
    if (!lines_.empty()) tx.exec_params(kReject, tenant_, std::string(job_.id()), pg_array(lines_), pg_array(reasons_), pg_array(raws_));
    tx.exec_params(kProgress, tenant_, std::string(job_.id()), pending_total_, static_cast<long long>(emails_.size()),
                   static_cast<long long>(lines_.size()));
    tx.commit();
    total_ += pending_total_;
    accepted_ += static_cast<long long>(emails_.size());
    rejected_ += static_cast<long long>(lines_.size());
    pending_total_ = 0;
    emails_.clear();
    names_.clear();
    attributes_json_.clear();
    lines_.clear();
    reasons_.clear();
    raws_.clear();
    job_.heartbeat();
  }

  Job& job_;
  pqxx::connection& conn_;
  std::string tenant_, list_;
  bool has_header_, header_skipped_ = false;
  size_t batch_size_;
  size_t max_row_bytes_;
  csv::Decoder decoder_;
  csv::Reader reader_;
  bool sniffing_ = false, encoding_said_ = false;
  char delimiter_ = ',';
  std::string head_;
  size_t email_col_ = 0, name_col_ = SIZE_MAX;
  std::vector<std::pair<size_t, std::string>> attributes_;
  std::vector<std::string> emails_, names_, attributes_json_, lines_, reasons_, raws_;
  long long pending_total_ = 0, total_ = 0, accepted_ = 0, rejected_ = 0;
};

// A whole download may take long; a server silent for stall_seconds is given up on (0: never).
jobhost_plugins::http::Limits http_limits(const jobhost_plugins::SettingsReader& s) {
  return {static_cast<long>(s.integer("http_timeout_ms", 600000, 1, 86400000)),
          static_cast<long>(s.integer("connect_timeout_ms", 10000, 1, 86400000)),
          static_cast<long>(s.integer("stall_seconds", 30, 0, 86400))};
}

const jobhost_plugins::SettingsReader::Keys kKeys = {"database_url",       "db_pool_size",  "import_root",
                                                     "batch_size",         "max_row_bytes", "max_field_bytes",
                                                     "http_timeout_ms",    "connect_timeout_ms", "stall_seconds",
                                                     "allow_cidrs"};

class ImportContacts : public jobhost::sdk::Plugin {
 public:
  explicit ImportContacts(const Settings& settings)
      : ImportContacts(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit ImportContacts(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 2),
        batch_size_(static_cast<int>(s.integer("batch_size", 1000, 1, 100000))),
        max_row_bytes_(static_cast<int>(s.integer("max_row_bytes", 65536, 64, 1LL << 30))),
        max_field_bytes_(static_cast<int>(s.integer("max_field_bytes", 16384, 16, 1LL << 30))),
        http_(jobhost_plugins::http::allow_list(s, "allow_cidrs"), "allow_cidrs", http_limits(s)) {
    const std::string root = s.required_string("import_root");
    std::error_code ec;
    if (!fs::is_directory(root, ec)) s.fail("import_root", "'" + root + "' is not a directory");
    root_ = fs::canonical(root);
  }

  std::string validate(std::string_view, const nlohmann::json& p) override {
    using namespace jobhost_plugins;
    if (auto e = first_error(need_string(p, "file_url", 4000), need_string(p, "tenant_id", 200),
                             need_string(p, "list_id", 200), need_object(p, "mapping"), opt_bool(p, "has_header"),
                             opt_string(p, "encoding", 20), opt_string(p, "delimiter", 4));
        !e.empty()) {
      return e;
    }
    if (p.contains("encoding") && !csv::parse_encoding(p["encoding"].get<std::string>())) {
      return "payload.encoding: '" + p["encoding"].get<std::string>() +
             "' is not utf-8, windows-1252, iso-8859-1 or utf-16";
    }
    if (p.contains("delimiter")) {
      const std::string d = p["delimiter"];
      if (d != "," && d != ";" && d != "\t" && d != "|" && d != "auto") {
        return "payload.delimiter: '" + d + "' is not \",\", \";\", \"\\t\", \"|\" or \"auto\"";
      }
    }
    const std::string url = p["file_url"];
    if (url.rfind("file://", 0) != 0 && url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return "payload.file_url: must start with file://, http:// or https://";
    }
    static const std::regex col("col_(0|[1-9][0-9]{0,3})");
    static const std::regex attribute("[a-z_][a-z0-9_]{0,62}");
    int emails = 0, names = 0;
    for (const auto& [key, target] : p["mapping"].items()) {
      if (!std::regex_match(key, col)) return "payload.mapping." + key + ": keys are col_0, col_1, ... (col_N, N < 10000)";
      if (!target.is_string()) return "payload.mapping." + key + ": must be a string";
      const std::string t = target;
      if (t == "email") ++emails;
      else if (t == "name") ++names;
      else if (!std::regex_match(t, attribute)) {
        return "payload.mapping." + key + ": '" + t + "' is not email, name, or an attribute name ([a-z_][a-z0-9_]*)";
      }
    }
    if (emails != 1) return "payload.mapping: exactly one column must map to \"email\" (found " + std::to_string(emails) + ")";
    if (names > 1) return "payload.mapping: at most one column may map to \"name\"";
    return {};
  }

  Result handle(Job& job) override {
    const nlohmann::json& p = job.payload();
    const std::string tenant = p["tenant_id"], list = p["list_id"], url = p["file_url"];
    auto conn = pool_.acquire();
    {
      pqxx::work tx(*conn);
      if (tx.exec_params("SELECT 1 FROM app.contact_lists WHERE tenant_id = $1 AND id = $2", tenant, list).empty()) {
        return Result::permanent("payload.list_id: no list '" + list + "' for tenant '" + tenant + "'");
      }
      // A new attempt starts over: the counters too.
      tx.exec_params(
          "INSERT INTO app.imports (job_id, tenant_id, list_id, file_url) VALUES ($1::uuid, $2, $3, $4) "
          "ON CONFLICT (job_id) DO UPDATE SET status = 'running', rows_total = 0, rows_accepted = 0, "
          "rows_rejected = 0, error = NULL, started_at = now(), finished_at = NULL",
          std::string(job.id()), tenant, list, url);
      tx.commit();
    }
    const csv::Options options{static_cast<size_t>(max_row_bytes_), static_cast<size_t>(max_field_bytes_), ','};
    Import import(job, *conn, p, static_cast<size_t>(batch_size_), options);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      if (url.rfind("file://", 0) == 0) {
        read_file(url, import);
      } else {
        read_http(url, import);
      }
      import.finish();
    } catch (const Permanent& e) {
      return fail(*conn, job, tenant, import, e.what(), true);
    } catch (const std::exception& e) {  // Transient, or the database
      return fail(*conn, job, tenant, import, e.what(), job.attempt() >= job.max_attempts());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const nlohmann::json summary{{"list_id", list},
                                 {"file_url", url},
                                 {"rows", import.total()},
                                 {"accepted", import.accepted()},
                                 {"rejected", import.rejected()}};
    {
      pqxx::work tx(*conn);
      tx.exec_params(
          "UPDATE app.contact_lists SET contact_count = (SELECT count(*) FROM app.contact_list_members "
          "WHERE tenant_id = $1 AND list_id = $2), updated_at = now() WHERE tenant_id = $1 AND id = $2",
          tenant, list);
      tx.exec_params("UPDATE app.imports SET status = 'completed', finished_at = now(), encoding = $3, delimiter = $4 "
                     "WHERE tenant_id = $1 AND job_id = $2::uuid",
                     tenant, std::string(job.id()), import.encoding(), import.delimiter());
      jobhost_plugins::notify(tx, tenant, "import.completed", std::string(job.id()), summary);
      tx.commit();
    }
    job.log_info("import into list " + list + ": " + std::to_string(import.total()) + " rows, " +
                 std::to_string(import.accepted()) + " accepted, " + std::to_string(import.rejected()) +
                 " rejected (" + import.encoding() + ", delimiter '" + import.delimiter() + "'), in " +
                 std::to_string(seconds) + " s");
    return Result::ok();
  }

 private:
  // The import's row says why: failed for good, or retrying (the next attempt
  // starts over). When the database itself is what failed, the job's error
  // still says it.
  Result fail(pqxx::connection& conn, Job& job, const std::string& tenant, const Import& import,
              const std::string& why, bool last) {
    try {
      pqxx::work tx(conn);
      tx.exec_params("UPDATE app.imports SET status = $3, error = $4, finished_at = CASE WHEN $5 THEN now() END, "
                     "encoding = $6, delimiter = $7 WHERE tenant_id = $1 AND job_id = $2::uuid",
                     tenant, std::string(job.id()), last ? "failed" : "retrying", why, last, import.encoding(),
                     import.delimiter());
      tx.commit();
    } catch (const std::exception& e) {
      job.log_warn("import: cannot record the failure in app.imports: " + std::string(e.what()));
    }
    return last ? Result::permanent("import: " + why) : Result::retry("import: " + why);
  }

  void read_file(const std::string& url, Import& import) const {
    std::string path = percent_decode(url.substr(7));
    if (path.rfind("localhost/", 0) == 0) path = path.substr(9);
    if (path.empty() || path[0] != '/') throw Permanent("payload.file_url: a file:// URL needs an absolute path");
    std::error_code ec;
    // canonical() resolves every symlink, so a link inside the root cannot
    // lead outside it.
    const fs::path real = fs::canonical(path, ec);
    if (ec) throw Permanent("payload.file_url: cannot open " + path + ": " + ec.message());
    const auto [end, _] = std::mismatch(root_.begin(), root_.end(), real.begin(), real.end());
    if (end != root_.end()) {
      throw Permanent("payload.file_url: " + path + " is outside the import root (settings.import_root)");
    }
    std::ifstream in(real, std::ios::binary);
    if (!in) throw Transient("cannot read " + real.string());
    std::vector<char> buffer(1 << 16);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
      import.feed(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())));
    }
    if (in.bad()) throw Transient("read error on " + real.string());
  }

  void read_http(const std::string& url, Import& import) const {
    namespace http = jobhost_plugins::http;
    http::Request request;
    request.url = url;
    // An error page (or a redirect's body) is not CSV: only a 2xx body is fed.
    request.on_body = [&](std::string_view bytes) { import.feed(bytes); };
    request.cancelled = [&] { return import.cancelled(); };
    const http::Response r = http_.send(request);
    switch (r.failure) {
      case http::Failure::kRefused:  // the URL is the tenant's: it must not reach inside the platform's
                                     // network
        throw Permanent("payload.file_url: " + r.error);
      case http::Failure::kUnresolved:  // DNS: may pass
        throw Transient(r.error);
      default:
        break;
    }
    if (r.redirect()) {
      throw Permanent("GET " + url + " answered HTTP " + std::to_string(r.status) +
                      ": redirects are not followed (give the final URL)");
    }
    if (r.status >= 400) {
      const std::string what = "GET " + url + " answered HTTP " + std::to_string(r.status);
      if (r.status >= 500 || r.status == 408 || r.status == 429) throw Transient(what);
      throw Permanent(what);
    }
    switch (r.failure) {
      case http::Failure::kNone:
        return;
      case http::Failure::kCallback:
        throw Transient(r.error);
      case http::Failure::kCancelled:
        throw Transient(kCancelled);
      default:
        throw Transient("GET " + url + " failed: " + r.error);
    }
  }

  jobhost_plugins::PgPool pool_;
  int batch_size_;
  int max_row_bytes_;
  int max_field_bytes_;
  jobhost_plugins::http::Client http_;
  fs::path root_;
};

}  // namespace

JOBHOST_PLUGIN(ImportContacts, "import_contacts", "1.2.0", "import.contacts")
