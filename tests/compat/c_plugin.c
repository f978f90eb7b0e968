/* c_plugin: a jobhost plugin in plain C11, against <jobhost/abi.h> alone.
 * Job type "compat.c". The payload text is scanned, not parsed (no JSON library
 * in C here): "fail" in it fails the job for good, "bad" makes validate() refuse
 * it; otherwise the handler reports progress and enqueues a follow-up "noop"
 * job through the ABI 1.1 call enqueue_job, with the job id as its unique key
 * and the job's priority in the payload. */
#include <jobhost/abi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct c_instance {
  const jobhost_host_api* host;
  char label[64];
} c_instance;

static void copy_err(const char* m, char* err, size_t err_len) {
  if (err != NULL && err_len > 0) snprintf(err, err_len, "%s", m);
}

static void* c_create(const jobhost_host_api* host, const char* settings_json, char* err, size_t err_len) {
  c_instance* in;
  if (JOBHOST_ABI_MINOR_OF(host->abi_version) < 1 || host->struct_size < sizeof(jobhost_host_api)) {
    copy_err("c_plugin needs a host of plugin ABI 1.1 or newer", err, err_len);
    return NULL;
  }
  if (settings_json != NULL && strstr(settings_json, "\"unknown\"") != NULL) {
    copy_err("settings.unknown: unknown key", err, err_len);
    return NULL;
  }
  in = (c_instance*)calloc(1, sizeof *in);
  if (in == NULL) {
    copy_err("out of memory", err, err_len);
    return NULL;
  }
  in->host = host;
  snprintf(in->label, sizeof in->label, "%s", "c_plugin");
  return in;
}

static void c_destroy(void* instance) { free(instance); }

static int32_t c_validate(void* instance, const char* type, const char* payload_json, char* err, size_t err_len) {
  (void)instance;
  (void)type;
  if (strstr(payload_json, "\"bad\"") != NULL) {
    copy_err("payload: \"bad\" is not accepted by the C plugin", err, err_len);
    return 1;
  }
  return 0;
}

static int32_t c_handle(void* instance, const jobhost_job* job, jobhost_job_ctx* ctx, int64_t* retry_after_ms) {
  c_instance* in = (c_instance*)instance;
  const jobhost_host_api* host = in->host;
  char line[256];
  char payload[128];
  char id[40];
  char err[256];
  jobhost_enqueue_request req;
  (void)retry_after_ms;

  if (job->struct_size < sizeof(jobhost_job)) {
    host->set_error(ctx, "c_plugin: the host passed an ABI 1.0 job");
    return JOBHOST_PERMANENT;
  }
  snprintf(line, sizeof line, "%s: job %s priority %d attempt %d/%d", in->label, job->id, (int)job->priority,
           (int)job->attempt, (int)job->max_attempts);
  host->log(ctx, JOBHOST_LOG_INFO, line);
  if (strstr(job->payload_json, "\"fail\"") != NULL) {
    host->set_error(ctx, "c_plugin: asked to fail");
    return JOBHOST_PERMANENT;
  }
  host->heartbeat(ctx, 0.5);

  memset(&req, 0, sizeof req);
  req.struct_size = (uint32_t)sizeof req;
  req.type = "noop";
  snprintf(payload, sizeof payload, "{\"from_c\": \"%s\", \"priority\": %d}", job->id, (int)job->priority);
  req.payload_json = payload;
  req.use_priority = 1;
  req.priority = 3;
  req.unique_key = job->id;
  if (host->enqueue_job(ctx, &req, id, err, sizeof err) != 0) {
    host->set_error(ctx, err);
    return JOBHOST_RETRY;
  }
  snprintf(line, sizeof line, "%s: enqueued %s", in->label, id);
  host->log(ctx, JOBHOST_LOG_INFO, line);
  host->heartbeat(ctx, 1.0);
  return JOBHOST_OK;
}

static const char* const c_types[] = {"compat.c", NULL};

static const jobhost_plugin c_descriptor = {
    JOBHOST_ABI_VERSION, "compat_c", "1.1.0", c_types, "{\"max_attempts\": 2}",
    c_create, c_destroy, c_validate, c_handle, (uint32_t)sizeof(jobhost_plugin),
};

__attribute__((visibility("default"))) uint32_t jobhost_plugin_abi_version(void) { return JOBHOST_ABI_VERSION; }

__attribute__((visibility("default"))) const jobhost_plugin* jobhost_plugin_entry(void) { return &c_descriptor; }
