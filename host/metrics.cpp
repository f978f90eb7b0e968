// metrics.cpp: the registry and the text exposition format.
#include "metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace jobhost {
namespace {

// Label values escape backslash, double quote and newline; help text escapes
// backslash and newline (the exposition format's rules).
std::string escape(const std::string& s, bool quotes) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && quotes) out += "\\\"";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  // The shortest form that reads back as the same double.
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string label_text(const Metrics::Labels& labels, const std::string& extra_key = {},
                       const std::string& extra_value = {}) {
  if (labels.empty() && extra_key.empty()) return {};
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    out += (first ? "" : ",") + k + "=\"" + escape(v, true) + "\"";
    first = false;
  }
  if (!extra_key.empty()) out += (first ? "" : ",") + extra_key + "=\"" + extra_value + "\"";
  return out + "}";
}

const char* type_name(Metrics::Type t) {
  switch (t) {
    case Metrics::Type::kCounter: return "counter";
    case Metrics::Type::kGauge: return "gauge";
    case Metrics::Type::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

Metrics& Metrics::global() {
  static Metrics* m = [] {
    auto* r = new Metrics;
    const std::vector<double> job_seconds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
    r->declare("jobs_completed_total", Type::kCounter, "Jobs whose handler succeeded, by queue.");
    r->declare("jobs_failed_total", Type::kCounter,
               "Jobs dead-lettered (status failed) by this host, by queue: permanent failures, last attempts, and "
               "expired leases on the last attempt (the reaper's).");
    r->declare("jobs_retried_total", Type::kCounter, "Failed attempts scheduled for a retry, by queue.");
    r->declare("job_duration_seconds", Type::kHistogram, "Handler run time of one attempt, by queue.", job_seconds);
    r->declare("jobs_in_flight", Type::kGauge, "Attempts running now in this host, by plugin.");
    r->declare("queue_depth", Type::kGauge,
               "Jobs waiting to run (queued, in Redis, or scheduled for retry), by queue and priority band.");
    r->declare("dlq_size", Type::kGauge, "Dead-lettered (failed) jobs, by queue.");
    r->declare("flow_throttled_total", Type::kCounter,
               "Starts held back by flow control, by queue and limit (concurrency, rate, key_concurrency, key_rate, "
               "key_paused, handler, or \"limiter NAME\" of a limiters: entry). A held-back job is not an attempt.");
    r->declare("flow_active_keys", Type::kGauge, "Flow keys with jobs waiting in Redis, by queue.");
    r->declare("queue_paused", Type::kGauge, "1 while a queue is paused (jobctl queue pause), by queue.");
    r->declare("plugin_pool_size", Type::kGauge, "Worker threads of a plugin's pool in this host.");
    r->declare("plugin_scale_up", Type::kGauge,
               "1 while a plugin's queue depth is above its scaling.queue_depth_above: more workers or hosts would help.");
    r->declare("config_reloads_total", Type::kCounter, "SIGHUP reloads, by result (applied or rejected).");
    r->declare("jobs_direct_leased_total", Type::kCounter,
               "Jobs the migrator leased to this host's waiting workers by the claim itself, without Redis, by queue.");
    r->declare("migrator_batch_seconds", Type::kHistogram, "Time of one migrator claim-and-push batch.",
               {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1});
    r->declare("api_connections", Type::kGauge, "Open connections of the admin API, by listener.");
    r->declare("api_refused_total", Type::kCounter,
               "Connections and requests the admin API refused or dropped, by reason.");
    // Operating at scale (DESIGN §12): host/queue_signals.hpp, the reaper and the lease.
    r->declare("queue_lag_seconds", Type::kGauge,
               "Age of the oldest job that is due and not running, by queue and priority band (0: none).");
    r->declare("queue_ready", Type::kGauge,
               "Jobs due now and not running (not future-dated, not backing off), by queue and priority band.");
    r->declare("queue_jobs", Type::kGauge, "Jobs in each live state (waiting and in flight), by queue.");
    r->declare("queue_served", Type::kGauge, "1 while a host serving the queue reported in the last 30 s.");
    r->declare("job_start_delay_seconds", Type::kHistogram,
               "Time from a job being due (created, or its run_at if later) to its attempt's start, by queue.",
               {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600});
    return r;
  }();
  return *m;
}

void Metrics::declare(const std::string& name, Type type, const std::string& help, std::vector<double> buckets) {
  std::lock_guard lock(mu_);
  std::sort(buckets.begin(), buckets.end());
  families_[name] = Family{type, help, std::move(buckets), {}};
}

Metrics::Family& Metrics::family(const std::string& name) {
  const auto it = families_.find(name);
  if (it == families_.end()) throw std::logic_error("metric " + name + " was never declared");
  return it->second;
}

void Metrics::inc(const std::string& name, const Labels& labels, double by) {
  std::lock_guard lock(mu_);
  family(name).series[labels].value += by;
}

void Metrics::set(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  family(name).series[labels].value = value;
}

void Metrics::observe(const std::string& name, const Labels& labels, double value) {
  std::lock_guard lock(mu_);
  Family& f = family(name);
  Series& s = f.series[labels];
  if (s.buckets.empty()) s.buckets.assign(f.bounds.size(), 0);
  for (size_t i = 0; i < f.bounds.size(); ++i) {
    if (value <= f.bounds[i]) {
      ++s.buckets[i];
      break;
    }
  }
  s.value += value;
  ++s.count;
}

void Metrics::clear(const std::string& name) {
  std::lock_guard lock(mu_);
  family(name).series.clear();
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  std::lock_guard lock(mu_);
  const auto f = families_.find(name);
  if (f == families_.end()) return 0;
  const auto s = f->second.series.find(labels);
  if (s == f->second.series.end()) return 0;
  return f->second.type == Type::kHistogram ? static_cast<double>(s->second.count) : s->second.value;
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + escape(f.help, false) + "\n";
    out += "# TYPE " + name + " " + type_name(f.type) + "\n";
    for (const auto& [labels, s] : f.series) {
      if (f.type != Type::kHistogram) {
        out += name + label_text(labels) + " " + number(s.value) + "\n";
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i < f.bounds.size(); ++i) {
        cumulative += s.buckets.empty() ? 0 : s.buckets[i];
        out += name + "_bucket" + label_text(labels, "le", number(f.bounds[i])) + " " +
               std::to_string(cumulative) + "\n";
      }
      out += name + "_bucket" + label_text(labels, "le", "+Inf") + " " + std::to_string(s.count) + "\n";
      out += name + "_sum" + label_text(labels) + " " + number(s.value) + "\n";
      out += name + "_count" + label_text(labels) + " " + std::to_string(s.count) + "\n";
    }
  }
  return out;
}

}  // namespace jobhost
