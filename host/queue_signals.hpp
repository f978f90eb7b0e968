// queue_signals.hpp: the per-queue gauges that answer "are we late?" and "is
// anything stuck?" (DESIGN §12), read from PostgreSQL when /metrics is scraped:
//
//   queue_lag_seconds{queue,priority}  age of the oldest job that is due and
//                                      not running (0 when none)
//   queue_ready{queue,priority}        jobs due now and not running: what an
//                                      autoscaler should follow (future-dated
//                                      and backing-off jobs are not work yet)
//   queue_jobs{queue,state}            jobs in each live state
//   queue_served{queue}                1 while some host serves the queue
//
// Every registered queue gets every series, zeros included, so an alert can
// tell "no lag" from "no data".
#pragma once

#include <pqxx/pqxx>

#include "metrics.hpp"

namespace jobhost {

// One statement over the live jobs (the partial indexes' rows), then the
// gauges above are cleared and set. Throws on a database error, leaving the
// previous values in place.
void refresh_queue_signals(pqxx::connection& conn, Metrics& metrics);

}  // namespace jobhost
