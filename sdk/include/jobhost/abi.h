/* jobhost plugin ABI: the C boundary between the host and a job-type plugin.
 *
 * A plugin is a shared library exporting two C symbols:
 *
 *   uint32_t jobhost_plugin_abi_version(void);
 *       Returns JOBHOST_ABI_VERSION as the plugin was compiled. The host calls
 *       this first, before reading anything else from the library.
 *
 *   const jobhost_plugin* jobhost_plugin_entry(void);
 *       Returns a descriptor that lives as long as the library is loaded.
 *
 * Everything crossing the boundary is plain C: strings are NUL-terminated UTF-8,
 * payloads and settings are JSON text, and no exception may cross it. Host and
 * plugin may therefore be built by different compilers, and a plugin may be
 * written in C alone. Plugin authors normally write C++ against
 * <jobhost/plugin.hpp>, which implements this boundary.
 *
 * VERSIONS. The ABI has a major and a minor version, packed into one number by
 * JOBHOST_ABI_MAKE. A host loads every plugin of its own major whose minor is
 * at most its own, and gives it exactly the behaviour of the minor it was built
 * for: it never reads a field or honours a value that minor did not define. A
 * plugin built for a newer minor than the host's, or for another major, is
 * refused with a message naming both versions.
 *
 * Minor versions only append: a new field goes at the end of its struct, a new
 * callback at the end of jobhost_host_api, each marked "since 1.N". Every struct
 * from 1.1 on carries its own size (struct_size) so either side can tell which
 * fields the other knows. A major bump is for removals only, and the host keeps
 * loading the previous major for at least one release.
 *
 * ABI 1.0 plugins returned the plain number 1 from jobhost_plugin_abi_version;
 * a value below 0x10000 is read as a major alone with minor 0, so they load
 * unchanged.
 */
#ifndef JOBHOST_ABI_H
#define JOBHOST_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JOBHOST_ABI_MAKE(major, minor) ((((uint32_t)(major)) << 16) | ((uint32_t)(minor)))
#define JOBHOST_ABI_MAJOR_OF(v) ((v) < 0x10000u ? (v) : ((v) >> 16))
#define JOBHOST_ABI_MINOR_OF(v) ((v) < 0x10000u ? 0u : ((v) & 0xffffu))

#define JOBHOST_ABI_MAJOR 1u
#define JOBHOST_ABI_MINOR 3u
#define JOBHOST_ABI_VERSION JOBHOST_ABI_MAKE(JOBHOST_ABI_MAJOR, JOBHOST_ABI_MINOR)

/* Outcome of one attempt, returned by handle(). */
typedef enum jobhost_outcome {
  JOBHOST_OK = 0,        /* done: the job is completed */
  JOBHOST_RETRY = 1,     /* failed, may succeed later: retried with backoff or after *retry_after_ms */
  JOBHOST_PERMANENT = 2, /* failed for good: dead-lettered at once */
  /* since 1.2: held back by a limit (a limiter to wait for, a relay's
   * deferral): put back to run again after *retry_after_ms (0 if unset)
   * WITHOUT using an attempt; a job_logs row with status "throttled" records
   * it. A host reads it only from plugins built for 1.2 or later. */
  JOBHOST_THROTTLED = 3
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

/* One attempt of one job, as handed to handle(). Valid only during handle(),
 * and read-only for the plugin. */
typedef struct jobhost_job {
  const char* id;           /* job uuid, text form */
  const char* type;         /* job type, e.g. "email.send" */
  const char* payload_json; /* JSON text, never NULL ("{}" when empty) */
  int32_t attempt;          /* 1 on the first attempt */
  int32_t max_attempts;     /* the last attempt has attempt == max_attempts */
  /* since 1.1 (read them only when struct_size covers them, or when the host's
   * minor is >= 1: a host always passes the fields of its own minor) */
  uint32_t struct_size;     /* sizeof(jobhost_job) as the host was built */
  int32_t priority;         /* 0..1000, lower runs first (<= 50 high, 51..150 normal) */
  int64_t created_at_ms;    /* when the job was enqueued, ms since the Unix epoch */
  /* since 1.2 */
  const char* flow_key;     /* the job's flow key (DESIGN §9), "" when it has none */
} jobhost_job;

/* A follow-up job for jobhost_host_api.enqueue_job (since 1.1). Zero-initialise
 * it, set struct_size = sizeof(jobhost_enqueue_request), then the fields you
 * need; a field left 0 / NULL takes its default. */
typedef struct jobhost_enqueue_request {
  uint32_t struct_size;     /* sizeof(jobhost_enqueue_request) as the plugin was built */
  const char* type;         /* required: the job type */
  const char* payload_json; /* NULL: "{}" */
  int32_t use_priority;     /* 0: the default priority (100); else `priority` */
  int32_t priority;         /* lower runs first: <= 50 high band, 51..150 normal */
  int64_t delay_ms;         /* runnable this long from now; <= 0: at once */
  int32_t max_attempts;     /* <= 0: the queue's default */
  const char* unique_key;   /* NULL or "": none. A job type holds each key once, for
                             * as long as the job's row exists (retention deletes
                             * finished rows): a second enqueue with the key creates
                             * nothing and returns the first job's id */
  /* since 1.3 */
  const char* flow_key;     /* NULL: from the payload by the queue's flow.key; else the job's flow key */
  const char* batch_id;     /* NULL or "": none; else an open batch (jobhost.batch_open) the job joins:
                             * enqueue fails naming the batch when it is not open */
} jobhost_enqueue_request;

/* Calls the host offers a plugin. Every call is thread-safe, never throws and
 * never calls back into the plugin. A ctx argument must be the one passed to a
 * handle() that is still running. */
typedef struct jobhost_host_api {
  /* The host's ABI version as seen by this plugin: the minor the plugin was
   * built for, never a newer one. Fields below marked "since 1.N" exist only
   * when JOBHOST_ABI_MINOR_OF(abi_version) >= N. */
  uint32_t abi_version;
  /* Writes a log line attributed to the job (ctx may be NULL outside a job).
   * Cost: a formatted line on the host's log; never blocks on I/O of the job. */
  void (*log)(jobhost_job_ctx* ctx, int32_t level, const char* message);
  /* Records the attempt's progress in [0, 1] (negative: unknown). It does NOT
   * extend the lease by itself: the host extends the lease of every running
   * attempt every host.lease.heartbeat_ms whether or not the handler calls this,
   * and writes the last progress recorded to jobhost.jobs.progress then, where
   * `jobctl status`, the API and the dashboard show it. Cheap (an atomic store);
   * call it as often as you like. A handler stuck past timeout_ms is abandoned
   * however often it calls this. */
  void (*heartbeat)(jobhost_job_ctx* ctx, double progress);
  /* Non-zero once the host wants the attempt to stop (timeout, operator cancel,
   * shutdown, lost lease). A handler that sees it should return JOBHOST_RETRY
   * promptly. An operator cancel is seen at the next lease extension. */
  int32_t (*cancelled)(jobhost_job_ctx* ctx);
  /* Records the message that goes with a RETRY or PERMANENT outcome. */
  void (*set_error)(jobhost_job_ctx* ctx, const char* message);
  /* Enqueues a follow-up job in PostgreSQL. Returns 0 and writes the new job id
   * (36 chars + NUL) into id_out on success; otherwise non-zero with a message
   * in err (truncated to err_len). priority < 0 means the default (100);
   * delay_ms is how long from now the job becomes runnable.
   * Cost: one round trip to PostgreSQL in a transaction of its own, committed
   * before it returns (the job is durable then), on one of the host's pooled
   * connections (it waits while all postgres.pool_size connections are busy).
   * It joins no transaction of the plugin: to enqueue atomically with the
   * plugin's own writes, call the SQL function jobhost.enqueue(...) in the
   * plugin's own transaction instead (see README, "Writing a plugin"). */
  int32_t (*enqueue)(jobhost_job_ctx* ctx, const char* type, const char* payload_json,
                     int32_t priority, int64_t delay_ms, char* id_out, char* err, size_t err_len);
  /* since 1.1 */
  uint32_t struct_size; /* sizeof(jobhost_host_api) as the host was built */
  /* enqueue with the options of jobhost_enqueue_request (unique key, max
   * attempts); same return values, cost and transaction rules as enqueue. */
  int32_t (*enqueue_job)(jobhost_job_ctx* ctx, const jobhost_enqueue_request* request, char* id_out,
                         char* err, size_t err_len);
  /* since 1.2 */
  /* Takes the named limiter of the config's limiters: section (an exact name,
   * or one matching a "prefix:*" entry) for the rest of this attempt, across
   * all hosts. Returns 0 when taken (or when no entry with limits governs
   * the name and it is not held back: then nothing limits it); otherwise
   * > 0, the milliseconds to wait before it
   * could be taken, and nothing is held. A handler that gets a wait normally
   * returns JOBHOST_THROTTLED with that delay, which costs no attempt. Taking
   * a limiter the attempt already holds returns 0 again. A concurrency slot
   * is given back when the attempt ends, or lapses after the plugin's
   * timeout_ms if its host dies. Returns -1 with no limiter taken when Redis
   * cannot be reached. Cost: one Redis round trip for a name an entry with
   * limits governs; none otherwise (the host keeps a copy of every host's
   * hold-offs, read again at most every 100 ms). */
  int64_t (*acquire)(jobhost_job_ctx* ctx, const char* limiter);
  /* Holds the named limiter back for delay_ms on every host (a relay deferred
   * us): acquire() of it returns a wait until then, on this host at once and
   * on the others within 100 ms. Cost: two Redis round trips. */
  void (*hold_off)(jobhost_job_ctx* ctx, const char* limiter, int64_t delay_ms);
} jobhost_host_api;

/* What a plugin is and what it can do. Returned by jobhost_plugin_entry(). */
typedef struct jobhost_plugin {
  uint32_t abi_version;       /* JOBHOST_ABI_VERSION, the same as jobhost_plugin_abi_version() */
  const char* name;           /* e.g. "email_send" */
  const char* version;        /* the plugin's own version, e.g. "1.2.0" */
  const char* const* job_types; /* NULL-terminated list of job types served */
  /* Default retry policy as JSON ({"max_attempts":5,"base_ms":1000,"max_ms":600000}),
   * or NULL. The YAML's retry: block overrides it key by key. */
  const char* default_retry_json;

  /* Builds an instance from the plugin's settings: block (JSON). Returns NULL
   * and a message naming the bad key in err on failure. The host keeps `host`
   * valid while the instance lives. */
  void* (*create)(const jobhost_host_api* host, const char* settings_json, char* err, size_t err_len);
  /* Destroys an instance. No handle() or validate() of it runs any more. */
  void (*destroy)(void* instance);
  /* Returns 0 when the payload is acceptable for the type, else non-zero with a
   * message naming the bad field in err. Must not block. Called concurrently. */
  int32_t (*validate)(void* instance, const char* type, const char* payload_json, char* err,
                      size_t err_len);
  /* Runs one attempt. Called concurrently from several threads. On RETRY,
   * *retry_after_ms may be set (>= 0) to ask for a specific delay; it is -1 on
   * entry, meaning "use the backoff policy". */
  int32_t (*handle)(void* instance, const jobhost_job* job, jobhost_job_ctx* ctx,
                    int64_t* retry_after_ms);
  /* since 1.1 */
  uint32_t struct_size; /* sizeof(jobhost_plugin) as the plugin was built */
} jobhost_plugin;

typedef uint32_t (*jobhost_plugin_abi_version_fn)(void);
typedef const jobhost_plugin* (*jobhost_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* JOBHOST_ABI_H */
