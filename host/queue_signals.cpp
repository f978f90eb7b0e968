// queue_signals.cpp: lag, ready work and jobs by state per queue (see queue_signals.hpp).
#include "queue_signals.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <string>

#include "job_state.hpp"
#include "routing.hpp"

namespace jobhost {
namespace {

// Due = run_at reached. A job in Redis was due when the migrator took it.
// The lag is computed by PostgreSQL's clock, like run_at itself.
const std::string kSignalsSql = state_sql(R"sql(
SELECT q.name, s.band, s.status, coalesce(s.n, 0), coalesce(s.due, 0), coalesce(s.lag, 0),
       q.served_at > now() - interval '30 seconds'
  FROM jobhost.job_queues q
  LEFT JOIN (
    SELECT queue_name, jobhost.priority_band(priority) AS band, status, count(*) AS n,
           count(*) FILTER (WHERE run_at <= now() AND status <> {running}) AS due,
           extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now() AND status <> {running}))::float8
               AS lag
      FROM jobhost.jobs
     WHERE status IN ({live})
     GROUP BY 1, 2, 3
  ) s ON s.queue_name = q.name
 ORDER BY q.name)sql");

struct QueueFigures {
  std::array<double, 3> lag{};
  std::array<double, 3> ready{};
  std::map<std::string, double> by_state;
  bool served = false;
};

}  // namespace

void refresh_queue_signals(pqxx::connection& conn, Metrics& m) {
  std::map<std::string, QueueFigures> queues;
  {
    pqxx::nontransaction tx(conn);
    for (const auto& row : tx.exec(kSignalsSql)) {
      QueueFigures& q = queues[row[0].c_str()];
      q.served = !row[6].is_null() && row[6].as<bool>();
      if (row[1].is_null()) continue;  // a queue without live jobs
      const int band = row[1].as<int>();
      if (band < 0 || band >= static_cast<int>(kBandsInFetchOrder.size())) continue;
      q.by_state[row[2].c_str()] += row[3].as<double>();
      q.ready[band] += row[4].as<double>();
      q.lag[band] = std::max(q.lag[band], row[5].as<double>());
    }
  }
  for (const char* family : {"queue_lag_seconds", "queue_ready", "queue_jobs", "queue_served"}) m.clear(family);
  for (const auto& [name, q] : queues) {
    for (const Band b : kBandsInFetchOrder) {
      const auto i = static_cast<size_t>(b);
      const Metrics::Labels labels{{"queue", name}, {"priority", std::string(band_name(b))}};
      m.set("queue_lag_seconds", labels, q.lag[i]);
      m.set("queue_ready", labels, q.ready[i]);
    }
    for (const JobState s : kJobStates) {
      if (is_terminal(s)) continue;
      const std::string state(to_text(s));
      const auto it = q.by_state.find(state);
      m.set("queue_jobs", {{"queue", name}, {"state", state}}, it == q.by_state.end() ? 0 : it->second);
    }
    m.set("queue_served", {{"queue", name}}, q.served ? 1 : 0);
  }
}

}  // namespace jobhost
