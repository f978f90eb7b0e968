// pooler.hpp: what postgres.pooler and postgres.listen_url change, applied
// once as a host starts (README, "PgBouncer").
#pragma once

#include "config.hpp"

namespace jobhost {

// Behind a transaction-mode pooler: no named prepared statements (exec_hot
// sends each statement whole). Logs where the migrator LISTENs, or that it
// polls every host.migrator.poll_interval_ms because it has nowhere to LISTEN.
void apply_pooler_mode(const Config& config);

}  // namespace jobhost
