// job_context.cpp: the host callbacks a plugin calls during handle().
#include "job_context.hpp"

#include <cstdio>

#include <spdlog/spdlog.h>

namespace jobhost {
namespace {

void api_log(jobhost_job_ctx* ctx, int32_t level, const char* message) {
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
}

void api_heartbeat(jobhost_job_ctx* ctx, double progress) {
  if (ctx != nullptr) ctx->progress = progress;
}

int32_t api_cancelled(jobhost_job_ctx* ctx) { return ctx != nullptr && ctx->cancelled ? 1 : 0; }

void api_set_error(jobhost_job_ctx* ctx, const char* message) {
  if (ctx == nullptr) return;
  std::lock_guard lock(ctx->error_mu);
  ctx->error = message ? message : "";
}

int32_t api_enqueue(jobhost_job_ctx* ctx, const char* type, const char* payload_json,
                    int32_t priority, int64_t delay_ms, char* id_out, char* err, size_t err_len) {
  auto fail = [&](const std::string& m) {
    if (err != nullptr && err_len > 0) std::snprintf(err, err_len, "%s", m.c_str());
    return 1;
  };
  if (ctx == nullptr || ctx->pool == nullptr) return fail("enqueue is only available inside a job");
  if (type == nullptr || *type == '\0') return fail("enqueue: job type is empty");
  try {
    const std::string id = ctx->pool->with([&](pqxx::connection& conn) {
      pqxx::work tx(conn);
      const auto row = tx.exec_params1(kEnqueueSql, std::string(type),
                                       std::string(payload_json ? payload_json : "{}"),
                                       priority < 0 ? 100 : priority, std::string(),
                                       delay_ms < 0 ? 0 : delay_ms, 0, std::string());
      tx.commit();
      return std::string(row[0].c_str());
    });
    if (id_out != nullptr) std::snprintf(id_out, 37, "%s", id.c_str());
    return 0;
  } catch (const std::exception& e) {
    return fail(std::string("enqueue of ") + type + " failed: " + e.what());
  }
}

const jobhost_host_api kHostApi = {
    JOBHOST_ABI_VERSION, &api_log, &api_heartbeat, &api_cancelled, &api_set_error, &api_enqueue,
};

}  // namespace

const jobhost_host_api* host_api() { return &kHostApi; }

}  // namespace jobhost
