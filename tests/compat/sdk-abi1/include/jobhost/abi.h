/* jobhost plugin ABI: the C boundary between the host and a job-type plugin.
 *
 * A plugin is a shared library exporting two C symbols:
 *
 *   uint32_t jobhost_plugin_abi_version(void);
 *       Returns JOBHOST_ABI_VERSION as the plugin was compiled. The host calls
 *       this first and refuses the library when it differs from its own, before
 *       reading anything else from it.
 *
 *   const jobhost_plugin* jobhost_plugin_entry(void);
 *       Returns a descriptor that lives as long as the library is loaded.
 *
 * Everything crossing the boundary is plain C: strings are NUL-terminated UTF-8,
 * payloads and settings are JSON text, and no exception may cross it. Host and
 * plugin may therefore be built by different compilers. Plugin authors normally
 * write C++ against <jobhost/plugin.hpp>, which implements this boundary.
 *
 * Bump JOBHOST_ABI_VERSION on any change to a struct layout or to the meaning of
 * a call below.
 */
#ifndef JOBHOST_ABI_H
#define JOBHOST_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JOBHOST_ABI_VERSION 1u

/* Outcome of one attempt, returned by handle(). */
typedef enum jobhost_outcome {
  JOBHOST_OK = 0,        /* done: the job is completed */
  JOBHOST_RETRY = 1,     /* failed, may succeed later: retried with backoff or after *retry_after_ms */
  JOBHOST_PERMANENT = 2  /* failed for good: dead-lettered at once */
} jobhost_outcome;

/* Log levels for jobhost_host_api.log. */
typedef enum jobhost_log_level {
  JOBHOST_LOG_DEBUG = 0,
  JOBHOST_LOG_INFO = 1,
  JOBHOST_LOG_WARN = 2,
  JOBHOST_LOG_ERROR = 3
} jobhost_log_level;

/* Opaque: the host's view of one running attempt. Valid only during handle(). */
typedef struct jobhost_job_ctx jobhost_job_ctx;

/* One attempt of one job, as handed to handle(). Valid only during handle(). */
typedef struct jobhost_job {
  const char* id;           /* job uuid, text form */
  const char* type;         /* job type, e.g. "email.send" */
  const char* payload_json; /* JSON text, never NULL ("{}" when empty) */
  int32_t attempt;          /* 1 on the first attempt */
  int32_t max_attempts;     /* the last attempt has attempt == max_attempts */
} jobhost_job;

/* Calls the host offers a plugin. Every call is thread-safe. A ctx argument must
 * be the one passed to the handle() that is running. */
typedef struct jobhost_host_api {
  uint32_t abi_version;
  /* Writes a log line attributed to the job (ctx may be NULL outside a job). */
  void (*log)(jobhost_job_ctx* ctx, int32_t level, const char* message);
  /* Extends the job's lease and records progress in [0, 1] (negative: unknown).
   * Long handlers call it at least once per lease heartbeat. */
  void (*heartbeat)(jobhost_job_ctx* ctx, double progress);
  /* Non-zero once the host wants the attempt to stop (timeout, cancel, shutdown).
   * A handler that sees it should return JOBHOST_RETRY promptly. */
  int32_t (*cancelled)(jobhost_job_ctx* ctx);
  /* Records the message that goes with a RETRY or PERMANENT outcome. */
  void (*set_error)(jobhost_job_ctx* ctx, const char* message);
  /* Enqueues a follow-up job in PostgreSQL. Returns 0 and writes the new job id
   * (36 chars + NUL) into id_out on success; otherwise non-zero with a message
   * in err (truncated to err_len). priority < 0 means the default (100);
   * delay_ms is how long from now the job becomes runnable. */
  int32_t (*enqueue)(jobhost_job_ctx* ctx, const char* type, const char* payload_json,
                     int32_t priority, int64_t delay_ms, char* id_out, char* err, size_t err_len);
} jobhost_host_api;

/* What a plugin is and what it can do. Returned by jobhost_plugin_entry(). */
typedef struct jobhost_plugin {
  uint32_t abi_version;       /* JOBHOST_ABI_VERSION */
  const char* name;           /* e.g. "email_send" */
  const char* version;        /* the plugin's own version, e.g. "1.2.0" */
  const char* const* job_types; /* NULL-terminated list of job types served */
  /* Default retry policy as JSON ({"max_attempts":5,"base_ms":1000,"max_ms":600000}),
   * or NULL. The YAML's retry: block overrides it key by key. */
  const char* default_retry_json;

  /* Builds an instance from the plugin's settings: block (JSON). Returns NULL
   * and a message naming the bad key in err on failure. */
  void* (*create)(const jobhost_host_api* host, const char* settings_json, char* err, size_t err_len);
  /* Destroys an instance. No handle() of it runs any more. */
  void (*destroy)(void* instance);
  /* Returns 0 when the payload is acceptable for the type, else non-zero with a
   * message naming the bad field in err. Must not block. */
  int32_t (*validate)(void* instance, const char* type, const char* payload_json, char* err,
                      size_t err_len);
  /* Runs one attempt. Called concurrently from several threads. On RETRY,
   * *retry_after_ms may be set (>= 0) to ask for a specific delay; it is -1 on
   * entry, meaning "use the backoff policy". */
  int32_t (*handle)(void* instance, const jobhost_job* job, jobhost_job_ctx* ctx,
                    int64_t* retry_after_ms);
} jobhost_plugin;

typedef uint32_t (*jobhost_plugin_abi_version_fn)(void);
typedef const jobhost_plugin* (*jobhost_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* JOBHOST_ABI_H */
