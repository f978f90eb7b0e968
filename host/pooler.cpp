// pooler.cpp: see pooler.hpp.
#include "pooler.hpp"

#include <spdlog/spdlog.h>

#include "notify_wait.hpp"
#include "pg.hpp"

namespace jobhost {

void apply_pooler_mode(const Config& config) {
  set_prepared_statements(!config.behind_transaction_pooler());
  if (!config.behind_transaction_pooler()) {
    if (!config.postgres_listen_url.empty()) {
      spdlog::info("postgres: LISTEN on postgres.listen_url ({})", redact_url(config.postgres_listen_url));
    }
    return;
  }
  const std::string listen = listen_url_for(config);
  if (listen.empty()) {
    spdlog::warn(
        "postgres: postgres.url goes through a transaction pooler and no postgres.listen_url is set: no LISTEN; "
        "the migrator polls every {} ms (host.migrator.poll_interval_ms)",
        config.migrator_poll_interval_ms);
  } else {
    spdlog::info("postgres: through a transaction pooler (no prepared statements); LISTEN on postgres.listen_url ({})",
                 redact_url(listen));
  }
}

}  // namespace jobhost
