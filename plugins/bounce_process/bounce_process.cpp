// bounce_process: the job types "bounce.process" and "bounce.scan" (DESIGN
// §11). An MTA or an ESP bridge drops each returned message as a file into the
// Maildir at settings.inbound_root; bounce.scan (scheduled) turns every file of
// new/ into one bounce.process job, and bounce.process reads it
// (bounce_parser.hpp), records one app.email_bounces row per failed recipient,
// acts on them and moves the file to cur/.
//
// bounce.process, payload {"path": "new/<file>"} (relative to inbound_root),
// in one transaction per message:
//   - hard, for a known tenant: app.suppressions (reason "bounced"), an
//     app.email_events "bounced" and the tenant's webhooks ("email.bounced");
//   - complaint: the same with "complained" / "email.complained";
//   - soft: the event and webhook too ("bounced", detail.kind "soft"), and a
//     suppression ("soft_bounce") once the tenant has soft_bounce_limit soft
//     bounces of that recipient within soft_bounce_window_days;
//   - auto_reply, unknown, or no tenant known: the row alone.
// The tenant is known when the message names one of ours (Message-ID
// <job-id@jobhost> or VERP bounce+<job-id>@...) and app.email_messages has it.
//
// Exactly once: rows are unique per (source_file, recipient, kind) and only a
// row this attempt inserted has effects, so a retry after a crash between the
// commit and the move to cur/ adds nothing. bounce.scan enqueues with the
// unique key "new/<file>", so two hosts scanning at once make one job a file.
//
// A file that is not a mail message (binary, empty, truncated, over a size
// limit) or a path outside inbound_root fails the job for good, with the
// reason, and writes nothing; the file stays in new/ for the operator.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <jobhost/plugin.hpp>
#include <jobhost_plugins/bounce_kind.hpp>
#include <jobhost_plugins/email_address.hpp>
#include <jobhost_plugins/enqueue.hpp>
#include <jobhost_plugins/notify.hpp>
#include <jobhost_plugins/payload.hpp>
#include <jobhost_plugins/pg_pool.hpp>
#include <jobhost_plugins/settings.hpp>

#include "bounce_parser.hpp"
#include "inbound_file.hpp"

namespace {

using jobhost::sdk::Job;
using jobhost::sdk::Result;
using jobhost::sdk::Settings;
namespace fs = std::filesystem;

constexpr const char* kFindMessage = R"SQL(
SELECT tenant_id, id, campaign_id, recipient FROM app.email_messages WHERE job_id = $1::uuid)SQL";

constexpr const char* kInsertBounce = R"SQL(
INSERT INTO app.email_bounces (tenant_id, recipient, status, reply_code, diagnostic, kind, message_id, job_id,
                               email_message_id, source_file)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::uuid, $9, $10)
ON CONFLICT (source_file, recipient, kind) WHERE source_file IS NOT NULL DO NOTHING
RETURNING id)SQL";

constexpr const char* kSuppress = R"SQL(
INSERT INTO app.suppressions (tenant_id, email, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING)SQL";

constexpr const char* kEvent = R"SQL(
INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail)
VALUES ($1, $2, $3, $4, $5, $6::jsonb))SQL";

// Served by email_bounces_soft_idx.
constexpr const char* kSoftCount = R"SQL(
SELECT count(*) FROM app.email_bounces
 WHERE tenant_id = $1 AND recipient = $2 AND kind = 'soft' AND created_at > now() - make_interval(days => $3))SQL";

// The one email_messages row a bounce answers, when it names one we know.
struct Original {
  std::string tenant_id;
  long long row_id = 0;
  std::optional<std::string> campaign_id;
  std::string recipient;
};

std::optional<std::string> nonempty(const std::string& s) {
  return s.empty() ? std::nullopt : std::optional<std::string>(s);
}

const jobhost_plugins::SettingsReader::Keys kKeys = {
    "database_url",      "db_pool_size",     "inbound_root", "soft_bounce_limit", "soft_bounce_window_days",
    "max_message_bytes", "max_header_bytes", "max_parts",    "max_scan_files"};

class BounceProcess : public jobhost::sdk::Plugin {
 public:
  explicit BounceProcess(const Settings& settings)
      : BounceProcess(jobhost_plugins::SettingsReader(settings, kKeys)) {}

  explicit BounceProcess(const jobhost_plugins::SettingsReader& s)
      : pool_(s, 2),
        soft_limit_(s.integer("soft_bounce_limit", 3, 1, 1000)),
        soft_window_days_(static_cast<int>(s.integer("soft_bounce_window_days", 30, 1, 3650))),
        max_message_bytes_(static_cast<size_t>(s.integer("max_message_bytes", 10 << 20, 1024, 1LL << 30))),
        max_scan_files_(static_cast<size_t>(s.integer("max_scan_files", 10000, 1, 1000000))) {
    limits_.max_header_bytes = static_cast<size_t>(s.integer("max_header_bytes", 64 << 10, 1024, 16 << 20));
    limits_.max_parts = static_cast<size_t>(s.integer("max_parts", 500, 2, 100000));
    // The MTA owns the Maildir and may create it with its first bounce (Exim's
    // and Postfix's maildir delivery do): a missing root is no error here, a
    // root that is not a folder is.
    root_ = s.required_string("inbound_root");
    std::error_code ec;
    if (fs::exists(root_, ec) && !fs::is_directory(root_, ec)) {
      s.fail("inbound_root", "'" + root_.string() + "' is not a directory");
    }
  }

  std::string validate(std::string_view type, const nlohmann::json& p) override {
    if (!p.is_object()) return "payload: must be an object";
    if (type == "bounce.process") return jobhost_plugins::need_string(p, "path", 4096);
    return {};
  }

  Result handle(Job& job) override {
    if (job.type() == "bounce.scan") return scan(job);
    return process(job);
  }

 private:
  // Files of new/ in name order, as one bounce.process job each. The order
  // also keeps two concurrent scans from deadlocking on each other's keys.
  Result scan(Job& job) {
    std::vector<std::string> names;
    std::error_code ec;
    if (!fs::is_directory(root_ / "new", ec)) {
      job.log_info("bounce.scan: no " + (root_ / "new").string() +
                   " yet (the MTA makes it with its first bounce)");
      return Result::ok();
    }
    for (fs::directory_iterator it(root_ / "new", ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.empty() || name[0] == '.' || !it->is_regular_file(ec)) continue;
      names.push_back(name);
    }
    if (ec)
      return Result::retry("bounce.scan: cannot list " + (root_ / "new").string() + ": " + ec.message());
    std::sort(names.begin(), names.end());
    if (names.size() > max_scan_files_) names.resize(max_scan_files_);  // the next scan takes the rest
    auto conn = pool_.acquire();
    constexpr size_t kPerTransaction = 500;
    for (size_t i = 0; i < names.size(); i += kPerTransaction) {
      pqxx::work tx(*conn);
      for (size_t k = i; k < std::min(names.size(), i + kPerTransaction); ++k) {
        const std::string path = "new/" + names[k];
        jobhost_plugins::enqueue(tx, "bounce.process", {{"path", path}}, {100, path});
      }
      tx.commit();
      job.heartbeat();
    }
    job.log_info("bounce.scan: " + std::to_string(names.size()) +
                 " file(s) in new/, each with its bounce.process job");
    return Result::ok();
  }

  Result process(Job& job) {
    const std::string rel = job.payload()["path"];
    std::optional<fs::path> file;
    std::string raw;
    bounce::Report report;
    std::error_code ec;
    const fs::path root = fs::canonical(root_, ec);
    if (ec)
      return Result::permanent("bounce.process: settings.inbound_root '" + root_.string() +
                               "': " + ec.message());
    try {
      file = bounce::confined_path(root, rel);
      if (!file) {
        // Moved by an attempt that ended before it could say so.
        if (rel.rfind("new/", 0) == 0 && fs::exists(root / "cur" / fs::path(rel).filename())) {
          job.log_info("bounce.process: " + rel + " is already in cur/ (processed)");
          return Result::ok();
        }
        return Result::permanent("bounce.process: payload.path: no such file '" + rel +
                                 "' under settings.inbound_root");
      }
      raw = bounce::read_capped(*file, max_message_bytes_);
      report = bounce::parse_bounce(raw, limits_);
    } catch (const bounce::Refused& e) {
      return Result::permanent("bounce.process: " + rel + ": " + e.what());
    } catch (const bounce::Malformed& e) {
      return Result::permanent("bounce.process: " + rel + ": not a readable message: " + e.what());
    }
    raw.clear();
    raw.shrink_to_fit();

    int recorded = 0;
    {
      auto conn = pool_.acquire();
      pqxx::work tx(*conn);
      std::optional<Original> original;
      if (!report.job_id.empty()) {
        const pqxx::result r = tx.exec_params(kFindMessage, report.job_id);
        if (!r.empty()) {
          original = Original{r[0][0].c_str(), r[0][1].as<long long>(),
                              r[0][2].is_null() ? std::nullopt : std::optional<std::string>(r[0][2].c_str()),
                              r[0][3].c_str()};
        }
      }
      for (const bounce::Failure& f : report.failures) recorded += record(tx, rel, report, f, original);
      tx.commit();
    }
    if (rel.rfind("new/", 0) == 0) {
      fs::create_directories(root / "cur", ec);
      fs::rename(*file, root / "cur" / file->filename(), ec);
      if (ec)
        return Result::retry("bounce.process: recorded, but cannot move " + rel +
                             " to cur/: " + ec.message());
    }
    std::string kinds;
    for (const bounce::Failure& f : report.failures) kinds += (kinds.empty() ? "" : ", ") + f.kind;
    job.log_info("bounce.process: " + rel + ": " + report.format + ", " +
                 std::to_string(report.failures.size()) + " recipient(s) (" + kinds + "), " +
                 std::to_string(recorded) + " new row(s)" +
                 (report.job_id.empty() ? ", no message of ours named"
                                        : ", job " + report.job_id + " by " + report.matched_by));
    return Result::ok();
  }

  // One row and its effects; 0 when an earlier attempt already recorded it.
  int record(pqxx::work& tx, const std::string& rel, const bounce::Report& report, const bounce::Failure& f,
             const std::optional<Original>& original) {
    std::string recipient = f.recipient;
    // An ARF report often redacts the address; the message we sent does not.
    if (original && (recipient.empty() || f.kind == jobhost_plugins::kBounceComplaint)) {
      recipient = jobhost_plugins::normalize_email(original->recipient);
    }
    const std::optional<std::string> tenant = original ? std::optional(original->tenant_id) : std::nullopt;
    const pqxx::result inserted =
        tx.exec_params(kInsertBounce, tenant, recipient, nonempty(f.status), f.reply_code,
                       nonempty(f.diagnostic), f.kind, nonempty(report.message_id), nonempty(report.job_id),
                       original ? std::optional(original->row_id) : std::nullopt, rel);
    if (inserted.empty()) return 0;
    if (!original) return 1;
    const std::string bounce_id = inserted[0][0].c_str();
    const bool complaint = f.kind == jobhost_plugins::kBounceComplaint;
    if (!complaint && f.kind != jobhost_plugins::kBounceHard && f.kind != jobhost_plugins::kBounceSoft)
      return 1;

    const nlohmann::json detail{
        {"bounce_id", std::stoll(bounce_id)},
        {"kind", f.kind},
        {"status", f.status},
        {"reply_code", f.reply_code ? nlohmann::json(*f.reply_code) : nlohmann::json()},
        {"diagnostic", f.diagnostic}};
    tx.exec_params(kEvent, original->tenant_id, original->row_id, original->campaign_id, recipient,
                   complaint ? "complained" : "bounced", detail.dump());
    nlohmann::json data = detail;
    data["recipient"] = recipient;
    data["job_id"] = report.job_id;
    data["message_id"] = report.message_id;
    data["campaign_id"] = original->campaign_id ? nlohmann::json(*original->campaign_id) : nlohmann::json();
    jobhost_plugins::notify(tx, original->tenant_id, complaint ? "email.complained" : "email.bounced",
                            bounce_id, data);

    std::optional<std::string> reason;
    if (complaint) {
      reason = "complained";
    } else if (f.kind == jobhost_plugins::kBounceHard) {
      reason = "bounced";
    } else if (tx.exec_params1(kSoftCount, original->tenant_id, recipient, soft_window_days_)[0]
                   .as<long long>() >= soft_limit_) {
      reason = "soft_bounce";
    }
    if (reason && !jobhost_plugins::email_problem(recipient)) {
      tx.exec_params(kSuppress, original->tenant_id, recipient, *reason);
    }
    return 1;
  }

  jobhost_plugins::PgPool pool_;
  long long soft_limit_;
  int soft_window_days_;
  size_t max_message_bytes_;
  size_t max_scan_files_;
  bounce::Limits limits_;
  fs::path root_;  // as configured; resolved by each job
};

}  // namespace

JOBHOST_PLUGIN(BounceProcess, "bounce_process", "1.0.0", "bounce.process", "bounce.scan")
