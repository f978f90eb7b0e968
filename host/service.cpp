// service.cpp: the pass loop, its back-off and its two log lines.
#include "service.hpp"

#include <spdlog/spdlog.h>

#include "pg.hpp"
#include "stop_sleep.hpp"

namespace jobhost {

Service::Service(Options options) : options_(std::move(options)) {
  if (!options_.redis_url.empty()) redis_.emplace(options_.redis_url);
  if (options_.max_backoff < options_.backoff) options_.max_backoff = options_.backoff;
}

Service::~Service() = default;

pqxx::connection& Service::pg() {
  if (!pg_ || !pg_->is_open()) {
    drop_pg();
    pg_ = pg_connect(options_.postgres_url);
    if (options_.hot_path) hot_path_session(*pg_);
    pg_connected(*pg_);
  }
  return *pg_;
}

Redis& Service::redis() {
  if (!redis_) throw std::logic_error(options_.name + ": no Redis URL was given to this service");
  return *redis_;
}

void Service::drop_pg() {
  if (!pg_) return;
  pg_dropping();
  pg_.reset();
}

void Service::run(std::stop_token stop) {
  if (!start_up()) return;
  if (options_.first_pass_after.count() > 0 && !sleep_unless_stopped(stop, options_.first_pass_after)) return;
  while (!stop.stop_requested()) {
    std::chrono::milliseconds pause;
    try {
      pause = run_once(stop);
      if (failures_ > 0) recovered();
    } catch (const std::exception& e) {
      pause = failed(e);
    }
    if (pause.count() > 0 && !sleep_unless_stopped(stop, pause)) return;
  }
}

std::chrono::milliseconds Service::failed(const std::exception& e) {
  if (failures_++ == 0) {
    failing_since_ = std::chrono::steady_clock::now();
    const std::string context = failure_context();
    spdlog::warn("{}: {}{}{}; retrying with back-off up to {} ms, quiet until it works again", options_.name,
                 context, context.empty() ? "" : ": ", e.what(), options_.max_backoff.count());
  } else {
    spdlog::debug("{}: still failing ({} in a row): {}", options_.name, failures_, e.what());
  }
  drop_pg();
  if (redis_) redis_->reset();
  return backoff_after(failures_, options_);
}

std::chrono::milliseconds backoff_after(int failures, const Service::Options& o) {
  std::chrono::milliseconds pause = o.backoff;
  for (int i = 1; i < failures && pause < o.max_backoff; ++i) pause *= 2;
  return std::min(pause, std::max(o.backoff, o.max_backoff));
}

void Service::recovered() {
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - failing_since_).count();
  spdlog::info("{}: working again after {} failed {} in {:.1f} s", options_.name, failures_,
               failures_ == 1 ? "pass" : "passes", secs);
  failures_ = 0;
}

}  // namespace jobhost
