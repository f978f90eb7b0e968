// The state model (host/job_state.hpp): the transition rules, the SQL composed
// from them, and that nothing else in host/ or sql/ disagrees with it.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include "job_state.hpp"
#include "migrations.hpp"
#include "outcome.hpp"

using namespace jobhost;

namespace {

std::set<std::string> model_names() {
  std::set<std::string> out;
  for (JobState s : kJobStates) out.emplace(to_text(s));
  return out;
}

template <typename Pred>
std::set<std::string> names_where(Pred pred) {
  std::set<std::string> out;
  for (JobState s : kJobStates) {
    if (pred(s)) out.emplace(to_text(s));
  }
  return out;
}

// 'a', 'b' → {a, b}
std::set<std::string> literals(const std::string& text) {
  std::set<std::string> out;
  static const std::regex lit("'([a-z_]*)'");
  for (std::sregex_iterator it(text.begin(), text.end(), lit), end; it != end; ++it) out.insert((*it)[1]);
  return out;
}

// Removes `--` comments (SQL) and, with cpp, `//` comments too.
std::string without_comments(const std::string& text, bool cpp) {
  std::istringstream in(text);
  std::string out, line;
  while (std::getline(in, line)) {
    for (const char* mark : {"--", cpp ? "//" : nullptr}) {
      if (mark == nullptr) continue;
      if (const size_t at = line.find(mark); at != std::string::npos) line.erase(at);
    }
    out += line + "\n";
  }
  return out;
}

// Every migration, in order, without comments, split into statements at the
// semicolons outside quotes and $$ bodies.
std::vector<std::string> migration_statements() {
  std::vector<std::string> out;
  for (const Migration& m : kMigrations) {
    const std::string sql = without_comments(m.sql, false);
    std::string cur;
    bool quoted = false, dollar = false;
    for (size_t i = 0; i < sql.size(); ++i) {
      const char c = sql[i];
      if (!quoted && c == '$' && i + 1 < sql.size() && sql[i + 1] == '$') {
        dollar = !dollar;
        cur += "$$";
        ++i;
        continue;
      }
      if (!dollar && c == '\'') quoted = !quoted;
      if (!quoted && !dollar && c == ';') {
        out.push_back(cur);
        cur.clear();
        continue;
      }
      cur += c;
    }
    if (cur.find_first_not_of(" \n\t") != std::string::npos) out.push_back(cur);
  }
  return out;
}

const std::regex kStatusTest(R"(status\s*(?:=|<>|!=|(?:NOT\s+)?IN)\s*(\([^)]*\)|'[a-z_]*'))");

}  // namespace

TEST_CASE("the transition rules: which state follows each end of an attempt", "[state]") {
  using E = AttemptEnd;
  using S = JobState;
  // end, last attempt, cancellation requested -> next state
  const std::vector<std::tuple<E, bool, bool, S>> table = {
      {E::kSucceeded, false, false, S::kCompleted},         {E::kSucceeded, true, true, S::kCompleted},
      {E::kFailed, false, false, S::kRetryScheduled},       {E::kFailed, true, false, S::kFailed},
      {E::kFailed, false, true, S::kCancelled},             {E::kFailed, true, true, S::kCancelled},
      {E::kFailedPermanently, false, false, S::kFailed},    {E::kFailedPermanently, false, true, S::kCancelled},
      {E::kHandedBack, false, false, S::kQueued},           {E::kHandedBack, true, false, S::kQueued},
      {E::kHandedBack, false, true, S::kCancelled},         {E::kLeaseExpired, false, false, S::kQueued},
      {E::kLeaseExpired, true, false, S::kFailed},          {E::kLeaseExpired, false, true, S::kCancelled},
      {E::kLeaseExpired, true, true, S::kCancelled},
  };
  for (const auto& [end, last, cancel, want] : table) {
    INFO("end " << static_cast<int>(end) << " last " << last << " cancel " << cancel);
    CHECK(next_state(end, last, cancel) == want);
  }
  CHECK(is_last_attempt(3, 3));
  CHECK_FALSE(is_last_attempt(2, 3));
  CHECK(gives_attempt_back(E::kHandedBack));
  CHECK_FALSE(gives_attempt_back(E::kLeaseExpired));
  // The attempt's log row: none for a hand-back, 'stalled' for a lease that put the job back.
  CHECK_FALSE(attempt_log(E::kHandedBack, S::kQueued).has_value());
  CHECK(attempt_log(E::kHandedBack, S::kCancelled) == "cancelled");
  CHECK(attempt_log(E::kLeaseExpired, S::kQueued) == "stalled");
  CHECK(attempt_log(E::kLeaseExpired, S::kFailed) == "failed");
  CHECK(attempt_log(E::kFailed, S::kRetryScheduled) == "retry_scheduled");
}

TEST_CASE("the worker's outcome kinds are the rules' states", "[state]") {
  for (AttemptEnd e : {AttemptEnd::kSucceeded, AttemptEnd::kFailed, AttemptEnd::kFailedPermanently,
                       AttemptEnd::kHandedBack}) {
    for (bool last : {false, true}) CHECK(outcome_state(outcome_for(e, last)) == state_after(e, last));
  }
  CHECK(outcome_status(OutcomeKind::kRetry) == "retry_scheduled");
  CHECK(outcome_for(AttemptEnd::kFailed, true) == OutcomeKind::kFailed);
  CHECK(outcome_for(AttemptEnd::kHandedBack, false) == OutcomeKind::kHandBack);
}

TEST_CASE("SQL is composed from the model's names and rules", "[state]") {
  CHECK(state_sql("WHERE status = {running} AND x IN ({ready}) AND y = '{}' AND z = '{a,b}'") ==
        "WHERE status = 'running' AND x IN ('queued', 'retry_scheduled') AND y = '{}' AND z = '{a,b}'");
  CHECK(state_sql("{live}") == "'queued', 'migrated_to_redis', 'running', 'retry_scheduled'");
  CHECK(state_sql("{terminal} {stalled}") == "'completed', 'failed', 'cancelled' 'stalled'");
  CHECK(state_sql("SET status = {next}", {{"next", "CASE END"}}) == "SET status = CASE END");
  CHECK_THROWS_WITH(state_sql("status = {runing}"), Catch::Contains("unknown placeholder {runing}"));

  CHECK(sql_next_state(AttemptEnd::kLeaseExpired, sql_is_last_attempt("j.a", "j.m"), "C") ==
        "CASE WHEN C THEN 'cancelled' WHEN j.a >= j.m THEN 'failed' ELSE 'queued' END");
  CHECK(sql_next_state(AttemptEnd::kSucceeded, "L", "C") == "CASE WHEN C THEN 'completed' ELSE 'completed' END");
  CHECK(sql_when_cancel_requested("o.status", "C") ==
        "CASE WHEN C AND o.status IN ('queued', 'retry_scheduled', 'failed') THEN 'cancelled' ELSE o.status END");
  CHECK(sql_attempt_log({AttemptEnd::kLeaseExpired}, "status") ==
        "CASE status WHEN 'queued' THEN 'stalled' ELSE status END");
  CHECK(sql_attempt_log({AttemptEnd::kSucceeded, AttemptEnd::kFailed, AttemptEnd::kFailedPermanently,
                         AttemptEnd::kHandedBack},
                        "s") == "CASE s WHEN 'queued' THEN NULL ELSE s END");
  // A hand-back and an expired lease both lead to queued but log differently.
  CHECK_THROWS_WITH(sql_attempt_log({AttemptEnd::kHandedBack, AttemptEnd::kLeaseExpired}, "s"),
                    Catch::Contains("does not tell"));
}

TEST_CASE("the migrations' status CHECK, default and partial indexes agree with the model", "[state][sql]") {
  std::string check, table;
  std::map<std::string, std::set<std::string>> index_states;
  size_t tested = 0;
  for (const std::string& st : migration_statements()) {
    if (st.find("jobhost.jobs") == std::string::npos) continue;
    static const std::regex constraint(R"(CONSTRAINT\s+jobs_status_valid\s+CHECK\s*\(\s*status\s+IN\s*\(([^)]*)\))");
    if (std::smatch m; std::regex_search(st, m, constraint)) check = m[1];
    if (st.find("CREATE TABLE jobhost.jobs") != std::string::npos) table = st;
    static const std::regex index(R"(CREATE\s+(?:UNIQUE\s+)?INDEX\s+(\w+)\s+ON\s+jobhost\.jobs[^;]*WHERE([^;]*))");
    if (std::smatch m; std::regex_search(st, m, index)) {
      const std::string pred = m[2];
      for (std::sregex_iterator it(pred.begin(), pred.end(), kStatusTest), end; it != end; ++it) {
        for (const auto& n : literals((*it)[1])) index_states[m[1]].insert(n);
      }
    }
    // Every state any statement about jobs compares with is one of the model's.
    for (std::sregex_iterator it(st.begin(), st.end(), kStatusTest), end; it != end; ++it) {
      for (const auto& n : literals((*it)[1])) {
        INFO("in: " << st);
        CHECK(model_names().count(n) == 1);
        ++tested;
      }
    }
  }
  CHECK(tested > 5);
  REQUIRE_FALSE(check.empty());
  CHECK(literals(check) == model_names());
  static const std::regex column(R"(\bstatus\s+text\s+NOT\s+NULL\s+DEFAULT\s+'([a-z_]+)')");
  std::smatch m;
  REQUIRE(std::regex_search(table, m, column));
  CHECK(m[1].str() == to_text(kInitialState));
  // The partial indexes the host's statements are planned on hold what those
  // statements ask for: the migrator's ready states, the reaper's running
  // jobs, the reconciler's migrated ones, the DLQ.
  CHECK(index_states["jobs_ready_band_idx"] == names_where(is_ready));
  CHECK(index_states["jobs_lease_idx"] == std::set<std::string>{std::string(to_text(JobState::kRunning))});
  CHECK(index_states["jobs_migrated_idx"] ==
        std::set<std::string>{std::string(to_text(JobState::kMigratedToRedis))});
  CHECK(index_states["jobs_failed_idx"] == std::set<std::string>{std::string(to_text(JobState::kFailed))});
}

TEST_CASE("no file of the host spells a state's name outside job_state.*", "[state]") {
  std::string names;
  for (const auto& n : model_names()) names += (names.empty() ? "" : "|") + n;
  names += "|" + std::string(kStalledLog) + "|" + std::string(jobhost::kThrottledLog);
  const std::regex literal("['\"](" + names + ")['\"]");
  const std::filesystem::path host = std::filesystem::path(JOBHOST_SOURCE_DIR) / "host";
  size_t files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(host)) {
    const auto ext = entry.path().extension();
    if (ext != ".cpp" && ext != ".hpp") continue;
    if (entry.path().stem() == "job_state") continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string code = without_comments(text.str(), true);
    ++files;
    std::smatch m;
    INFO(entry.path().string());
    CHECK_FALSE(std::regex_search(code, m, literal));
    if (!m.empty()) WARN("found " << m[0] << ": use the model (to_text, state_sql) instead");
  }
  CHECK(files > 40);
}
