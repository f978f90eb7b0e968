// gauges.hpp: the gauges of /metrics. They are snapshots, taken when /metrics
// is scraped, not kept up to date: per plugin its pool size and attempts in
// flight (this host's), per queue its depth by priority band and its DLQ size
// (read from PostgreSQL: the whole deployment's figure).
#pragma once

#include "flow_runtime.hpp"
#include "pg.hpp"
#include "pool_set.hpp"

namespace jobhost {

class Gauges {
 public:
  Gauges(const PoolSet& pools, PgPool& pg, FlowRuntime& flow) : pools_(pools), pg_(pg), flow_(flow) {}

  // Sets every gauge from a fresh snapshot. PostgreSQL unreachable: the queue
  // gauges keep their last values and a warning is logged; never throws.
  void refresh();

 private:
  const PoolSet& pools_;
  PgPool& pg_;
  FlowRuntime& flow_;
};

}  // namespace jobhost
