// job_context.cpp: the host callbacks a plugin calls during handle().
//
// Every callback catches everything: an exception must never unwind into plugin
// code, which may be C or built by another compiler (abi.h).
#include "job_context.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <optional>

#include <spdlog/spdlog.h>

#include "flow_dispatch.hpp"
#include "metrics.hpp"

namespace jobhost {
namespace {

void copy_out(const std::string& m, char* out, size_t len) {
  if (out != nullptr && len > 0) std::snprintf(out, len, "%s", m.c_str());
}

void api_log(jobhost_job_ctx* ctx, int32_t level, const char* message) noexcept {
  try {
    const auto lvl = level <= JOBHOST_LOG_DEBUG ? spdlog::level::debug
                     : level == JOBHOST_LOG_INFO ? spdlog::level::info
                     : level == JOBHOST_LOG_WARN ? spdlog::level::warn
                                                 : spdlog::level::err;
    if (ctx == nullptr) {
      spdlog::log(lvl, "plugin: {}", message ? message : "");
    } else {
      spdlog::log(lvl, "job {} type={} attempt={}: {}", ctx->job.id, ctx->job.type, ctx->job.attempt,
                  message ? message : "");
    }
  } catch (...) {
    // A log line that cannot be written is dropped; the attempt goes on.
  }
}

void api_heartbeat(jobhost_job_ctx* ctx, double progress) noexcept {
  if (ctx == nullptr) return;
  // NaN and out-of-range values are "unknown" / clamped, so the row always holds [0, 1] or NULL.
  if (!(progress >= 0.0)) progress = -1.0;
  if (progress > 1.0) progress = 1.0;
  ctx->progress = progress;
}

int32_t api_cancelled(jobhost_job_ctx* ctx) noexcept { return ctx != nullptr && ctx->cancelled ? 1 : 0; }

void api_set_error(jobhost_job_ctx* ctx, const char* message) noexcept {
  if (ctx == nullptr) return;
  try {
    std::lock_guard lock(ctx->error_mu);
    ctx->error = message ? message : "";
  } catch (...) {
    // Out of memory: the outcome keeps its generic message.
  }
}

// What a follow-up job's request says beyond type and payload (ABI 1.1 and 1.3 fields).
struct FollowUpOptions {
  std::optional<int32_t> priority;
  int64_t delay_ms = 0;
  int32_t max_attempts = 0;
  const char* unique_key = nullptr;
  const char* flow_key = nullptr;
  const char* batch_id = nullptr;
};

int32_t enqueue(jobhost_job_ctx* ctx, const char* type, const char* payload_json, const FollowUpOptions& o,
                char* id_out, char* err, size_t err_len) noexcept {
  try {
    if (ctx == nullptr || ctx->pool == nullptr) {
      copy_out("enqueue is only available inside a job", err, err_len);
      return 1;
    }
    if (type == nullptr || *type == '\0') {
      copy_out("enqueue: job type is empty", err, err_len);
      return 1;
    }
    const std::string id = ctx->pool->with([&](pqxx::connection& conn) {
      pqxx::work tx(conn);
      const auto row = tx.exec_params1(
          kEnqueueSql, std::string(type), std::string(payload_json ? payload_json : "{}"), o.priority.value_or(100),
          std::string(), o.delay_ms < 0 ? 0 : o.delay_ms, o.max_attempts < 0 ? 0 : o.max_attempts,
          std::string(o.unique_key ? o.unique_key : ""),
          o.flow_key ? std::optional<std::string>(o.flow_key) : std::nullopt,
          std::string(o.batch_id ? o.batch_id : ""));
      tx.commit();
      return std::string(row[0].c_str());
    });
    if (id_out != nullptr) std::snprintf(id_out, 37, "%s", id.c_str());
    return 0;
  } catch (const std::exception& e) {
    copy_out(std::string("enqueue of ") + (type ? type : "?") + " failed: " + e.what(), err, err_len);
  } catch (...) {
    copy_out("enqueue failed", err, err_len);
  }
  return 1;
}

int32_t api_enqueue(jobhost_job_ctx* ctx, const char* type, const char* payload_json, int32_t priority,
                    int64_t delay_ms, char* id_out, char* err, size_t err_len) noexcept {
  // As 1.0 defined it: any negative priority is the default.
  return enqueue(ctx, type, payload_json,
                 {.priority = priority < 0 ? std::nullopt : std::optional(priority), .delay_ms = delay_ms}, id_out, err,
                 err_len);
}

int32_t api_enqueue_job(jobhost_job_ctx* ctx, const jobhost_enqueue_request* r, char* id_out, char* err,
                        size_t err_len) noexcept {
  // The request's fields are read only as far as its struct_size says the
  // plugin knows them: a field appended by a later minor is left at its default.
  if (r == nullptr || r->struct_size < offsetof(jobhost_enqueue_request, unique_key) + sizeof r->unique_key) {
    copy_out("enqueue: the request is NULL or its struct_size is too small (set it to "
             "sizeof(jobhost_enqueue_request))",
             err, err_len);
    return 1;
  }
  FollowUpOptions o{.priority = r->use_priority != 0 ? std::optional(r->priority) : std::nullopt,
                    .delay_ms = r->delay_ms,
                    .max_attempts = r->max_attempts,
                    .unique_key = r->unique_key};
  if (r->struct_size >= offsetof(jobhost_enqueue_request, batch_id) + sizeof r->batch_id) {
    o.flow_key = r->flow_key;
    o.batch_id = r->batch_id;
  }
  return enqueue(ctx, r->type, r->payload_json, o, id_out, err, err_len);
}

int64_t api_acquire(jobhost_job_ctx* ctx, const char* limiter) noexcept {
  if (ctx == nullptr || ctx->flow == nullptr || limiter == nullptr) return -1;
  try {
    const std::string name(limiter);
    {
      std::lock_guard lock(ctx->limiters_mu);
      if (std::find(ctx->limiters.begin(), ctx->limiters.end(), name) != ctx->limiters.end()) return 0;
    }
    const auto limiters = ctx->flow->limiters();
    const LimiterConfig* entry = find_limiter(*limiters, name);
    long long wait = 0;
    if (entry == nullptr || !entry->limits.any()) {
      // No limits, but it may be held back (hold_off): this host's copy of
      // the hold-offs knows, without a round trip per acquire.
      wait = ctx->flow->held_for(name);
      if (wait < 0) return -1;
    } else {
      const std::string holder = ctx->job.id + "/" + std::to_string(ctx->job.attempt);
      wait = ctx->flow->redis().with([&](Redis& r) {
        return acquire_limiter(r, ctx->flow->prefix(), name, entry->limits, holder, ctx->limiter_slot_ms);
      });
    }
    if (wait > 0) {
      Metrics::global().inc("flow_throttled_total",
                            {{"queue", ctx->job.type}, {"limit", "limiter " + (entry ? entry->name : std::string("held"))}});
      return wait;
    }
    if (entry != nullptr && entry->limits.concurrency) {
      std::lock_guard lock(ctx->limiters_mu);
      ctx->limiters.push_back(name);
    }
    return 0;
  } catch (const std::exception& e) {
    spdlog::warn("job {}: limiter {} not taken: {}", ctx->job.id, limiter, e.what());
  } catch (...) {
  }
  return -1;
}

void api_hold_off(jobhost_job_ctx* ctx, const char* limiter, int64_t delay_ms) noexcept {
  if (ctx == nullptr || ctx->flow == nullptr || limiter == nullptr) return;
  try {
    ctx->flow->hold(limiter, delay_ms);
  } catch (const std::exception& e) {
    spdlog::warn("job {}: could not hold limiter {} back: {}", ctx->job.id, limiter, e.what());
  } catch (...) {
  }
}

// ABI 1.0 plugins get the table as 1.0 defined it: abi_version is the plain 1
// they were built with, and they know nothing past `enqueue`.
const jobhost_host_api kHostApi_1_0 = {
    1u, &api_log, &api_heartbeat, &api_cancelled, &api_set_error, &api_enqueue, 0, nullptr, nullptr, nullptr,
};

// A 1.1 plugin's table ends at enqueue_job: its struct_size says so.
const jobhost_host_api kHostApi_1_1 = {
    JOBHOST_ABI_MAKE(1, 1), &api_log,         &api_heartbeat, &api_cancelled, &api_set_error, &api_enqueue,
    offsetof(jobhost_host_api, enqueue_job) + sizeof(&api_enqueue_job), &api_enqueue_job, nullptr, nullptr,
};

const jobhost_host_api kHostApi_1_2 = {
    JOBHOST_ABI_MAKE(1, 2), &api_log,         &api_heartbeat, &api_cancelled, &api_set_error, &api_enqueue,
    sizeof(jobhost_host_api), &api_enqueue_job, &api_acquire, &api_hold_off,
};

}  // namespace

const jobhost_host_api* host_api(uint32_t minor) {
  return minor == 0 ? &kHostApi_1_0 : minor == 1 ? &kHostApi_1_1 : &kHostApi_1_2;
}

void release_attempt_limiters(jobhost_job_ctx& ctx) noexcept {
  try {
    std::vector<std::string> names;
    {
      std::lock_guard lock(ctx.limiters_mu);
      names.swap(ctx.limiters);
    }
    if (names.empty() || ctx.flow == nullptr) return;
    const std::string holder = ctx.job.id + "/" + std::to_string(ctx.job.attempt);
    ctx.flow->redis().with([&](Redis& r) {
      release_limiters(r, ctx.flow->prefix(), names, holder);
      return 0;
    });
  } catch (const std::exception& e) {
    spdlog::warn("job {}: limiters not given back ({}); their slots lapse by themselves", ctx.job.id, e.what());
  } catch (...) {
  }
}

}  // namespace jobhost
