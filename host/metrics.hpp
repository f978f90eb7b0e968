// metrics.hpp: the host's Prometheus metrics (DESIGN §6), rendered in the text
// exposition format at GET /metrics.
//
// Families are declared once (name, type, help); series are created on first
// use with their label values. Updates take one mutex and one map lookup, so
// they are cheap enough for once per job, not for inner loops.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace jobhost {

class Metrics {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  enum class Type { kCounter, kGauge, kHistogram };

  // The process-wide registry, with every family of DESIGN §6 declared.
  static Metrics& global();

  void declare(const std::string& name, Type type, const std::string& help,
               std::vector<double> buckets = {});
  void inc(const std::string& name, const Labels& labels, double by = 1);
  void set(const std::string& name, const Labels& labels, double value);
  void observe(const std::string& name, const Labels& labels, double value);
  // Drops every series of a gauge family (before re-setting it from a fresh
  // snapshot, so queues that vanished do not linger).
  void clear(const std::string& name);
  // One family's series value (tests and the dashboard's summary).
  double value(const std::string& name, const Labels& labels) const;

  std::string render() const;

 private:
  struct Series {
    double value = 0;                // counter / gauge; histogram: sum
    uint64_t count = 0;              // histogram
    std::vector<uint64_t> buckets;   // histogram, cumulative at render time
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;
    std::map<Labels, Series> series;
  };
  Family& family(const std::string& name);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
};

}  // namespace jobhost
