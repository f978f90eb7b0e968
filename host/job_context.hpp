// job_context.hpp: the host's side of one running attempt, and the C callbacks
// (jobhost_host_api) through which a plugin reaches it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flow_runtime.hpp"
#include "jobhost/abi.h"
#include "lease.hpp"
#include "pg.hpp"

// Declared opaque in <jobhost/abi.h>; defined here, in the global namespace.
struct jobhost_job_ctx {
  jobhost::LeasedJob job;
  jobhost::PgPool* pool = nullptr;  // for follow-up enqueues
  jobhost::FlowRuntime* flow = nullptr;  // for limiters (acquire, hold_off)
  int64_t limiter_slot_ms = 30000;       // a limiter's concurrency slot lapses after this
  std::mutex limiters_mu;
  std::vector<std::string> limiters;     // taken by this attempt; given back when it ends
  std::atomic<bool> cancelled{false};
  std::atomic<double> progress{-1.0};
  std::mutex error_mu;
  std::string error;  // guarded by error_mu
};

namespace jobhost {

// The callbacks handed to a plugin of ABI 1.<minor> at create(): the table as
// that minor defined it (abi_version says that minor, never a newer one).
const jobhost_host_api* host_api(uint32_t minor);

// Gives back the limiters the attempt took (its end). Never throws: a slot
// that cannot be given back lapses by itself.
void release_attempt_limiters(jobhost_job_ctx& ctx) noexcept;

// The C view of a leased job; points into ctx, valid while ctx lives.
inline jobhost_job c_job(const jobhost_job_ctx& ctx) {
  return {ctx.job.id.c_str(), ctx.job.type.c_str(), ctx.job.payload.c_str(), ctx.job.attempt,
          ctx.job.max_attempts, sizeof(jobhost_job), ctx.job.priority, ctx.job.created_at_ms,
          ctx.job.flow_key.c_str()};
}

}  // namespace jobhost
