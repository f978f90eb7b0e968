// job_state.cpp: SQL composed from the state model (see job_state.hpp).
#include "job_state.hpp"

#include <cctype>
#include <stdexcept>
#include <vector>

namespace jobhost {
namespace {

template <typename Pred>
std::string literal_list(Pred pred) {
  std::string out;
  for (JobState s : kJobStates) {
    if (!pred(s)) continue;
    if (!out.empty()) out += ", ";
    out += sql_literal(s);
  }
  return out;
}

// The named lists and literals of state_sql(), or nullopt.
std::optional<std::string> model_placeholder(std::string_view name) {
  if (const auto s = job_state_from_text(name)) return sql_literal(*s);
  if (name == kStalledLog) return sql_literal(kStalledLog);
  if (name == kThrottledLog) return sql_literal(kThrottledLog);
  if (name == "ready") return literal_list(is_ready);
  if (name == "live") return literal_list([](JobState s) { return !is_terminal(s); });
  if (name == "terminal") return literal_list(is_terminal);
  return std::nullopt;
}

bool is_name_char(char c) { return std::islower(static_cast<unsigned char>(c)) || c == '_'; }

// The distinct states state_after() can lead to, in kJobStates order.
template <typename Ends>
std::vector<JobState> attempt_results(const Ends& ends) {
  std::vector<JobState> out;
  for (JobState s : kJobStates) {
    for (AttemptEnd e : ends) {
      if (state_after(e, false) == s || state_after(e, true) == s) {
        out.push_back(s);
        break;
      }
    }
  }
  return out;
}

}  // namespace

std::string sql_literal(JobState s) { return sql_literal(to_text(s)); }

std::string sql_literal(std::string_view log_status) { return "'" + std::string(log_status) + "'"; }

std::string state_sql(std::string_view tmpl, SqlFragments fragments) {
  std::string out;
  out.reserve(tmpl.size() + 64);
  size_t i = 0;
  while (i < tmpl.size()) {
    // A placeholder is {lower_case_name}; other braces ('{}', array literals) stay.
    size_t end = i + 1;
    if (tmpl[i] == '{') {
      while (end < tmpl.size() && is_name_char(tmpl[end])) ++end;
    }
    if (tmpl[i] != '{' || end == i + 1 || end >= tmpl.size() || tmpl[end] != '}') {
      out += tmpl[i++];
      continue;
    }
    const std::string_view name = tmpl.substr(i + 1, end - i - 1);
    std::optional<std::string> text;
    for (const auto& [key, fragment] : fragments) {
      if (key == name) text = fragment;
    }
    if (!text) text = model_placeholder(name);
    if (!text) {
      throw std::logic_error("state_sql: unknown placeholder {" + std::string(name) +
                             "} (not a job state, a state list or a fragment given) in:\n" + std::string(tmpl));
    }
    out += *text;
    i = end + 1;
  }
  return out;
}

std::string sql_is_last_attempt(std::string_view attempt, std::string_view max_attempts) {
  // is_last_attempt(): attempt >= max_attempts
  return std::string(attempt) + " >= " + std::string(max_attempts);
}

std::string sql_next_state(AttemptEnd end, std::string_view last_attempt, std::string_view cancel_requested) {
  const std::string last(last_attempt);
  const std::string cancel(cancel_requested);
  const auto lit = [&](bool l, bool c) { return sql_literal(next_state(end, l, c)); };
  std::string out = "CASE";
  // With a cancellation requested, then without; each split on the last
  // attempt only where the rule tells them apart.
  if (lit(true, true) == lit(false, true)) {
    out += " WHEN " + cancel + " THEN " + lit(false, true);
  } else {
    out += " WHEN " + cancel + " AND " + last + " THEN " + lit(true, true);
    out += " WHEN " + cancel + " THEN " + lit(false, true);
  }
  if (lit(true, false) != lit(false, false)) out += " WHEN " + last + " THEN " + lit(true, false);
  out += " ELSE " + lit(false, false) + " END";
  return out;
}

std::string sql_when_cancel_requested(std::string_view state, std::string_view cancel_requested) {
  const std::string expr(state);
  std::string out = "CASE";
  // One arm per state a cancellation turns the result into (today one: cancelled).
  for (JobState target : kJobStates) {
    std::string from;
    for (JobState s : attempt_results(kAttemptEnds)) {
      if (when_cancel_requested(s) == target && s != target) from += (from.empty() ? "" : ", ") + sql_literal(s);
    }
    if (!from.empty()) {
      out += " WHEN " + std::string(cancel_requested) + " AND " + expr + " IN (" + from + ") THEN " +
             sql_literal(target);
    }
  }
  out += " ELSE " + expr + " END";
  return out;
}

std::string sql_attempt_log(std::initializer_list<AttemptEnd> ends, std::string_view next) {
  const std::string expr(next);
  std::string out = "CASE " + expr;
  bool any = false;
  for (JobState s : kJobStates) {
    // Every way these ends can reach s must log the same.
    std::optional<std::optional<std::string_view>> log;
    for (AttemptEnd e : ends) {
      for (bool last : {false, true}) {
        for (bool cancel : {false, true}) {
          if (next_state(e, last, cancel) != s) continue;
          const auto l = attempt_log(e, s);
          if (log && *log != l) {
            throw std::logic_error("sql_attempt_log: the state " + std::string(to_text(s)) +
                                   " alone does not tell which job_logs status to write");
          }
          log = l;
        }
      }
    }
    if (!log || *log == to_text(s)) continue;
    out += " WHEN " + sql_literal(s) + " THEN " + (*log ? sql_literal(**log) : std::string("NULL"));
    any = true;
  }
  if (!any) return expr;
  out += " ELSE " + expr + " END";
  return out;
}

}  // namespace jobhost
