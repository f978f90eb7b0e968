// jobhost/plugin.hpp: the C++ way to write a jobhost plugin.
//
//   class Mailer : public jobhost::sdk::Plugin {
//    public:
//     explicit Mailer(const jobhost::sdk::Settings& s) { ... }   // throws SettingsError
//     jobhost::sdk::Result handle(jobhost::sdk::Job& job) override { ... }
//   };
//   JOBHOST_PLUGIN(Mailer, "mailer", "1.0.0", "email.send")
//
// The macro exports the two C symbols of <jobhost/abi.h> and converts every
// exception into an outcome, so nothing throws across the boundary.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include <nlohmann/json.hpp>

#include "jobhost/abi.h"
#include "jobhost/job.hpp"
#include "jobhost/result.hpp"
#include "jobhost/settings.hpp"

namespace jobhost::sdk {

// Base of every plugin instance. One instance serves all worker threads of the
// plugin, so handle() and validate() must be thread-safe.
class Plugin {
 public:
  virtual ~Plugin() = default;

  // Checks a payload before it is run. Return an empty string when it is
  // acceptable, else a message naming the bad field. A payload refused here is
  // dead-lettered without running handle(). Must not block.
  virtual std::string validate(std::string_view /*type*/, const nlohmann::json& /*payload*/) {
    return {};
  }

  // Runs one attempt. An exception is a retryable failure carrying its message.
  virtual Result handle(Job& job) = 0;

  // Set by the host before any call; lets a plugin log outside a job.
  void attach_host(const jobhost_host_api* host) { host_ = host; }
  const jobhost_host_api* host() const { return host_; }

 private:
  const jobhost_host_api* host_ = nullptr;
};

namespace detail {

inline void copy_error(const std::string& message, char* err, size_t err_len) {
  if (err == nullptr || err_len == 0) return;
  std::snprintf(err, err_len, "%s", message.c_str());
}

template <typename P>
void* create(const jobhost_host_api* host, const char* settings_json, char* err, size_t err_len) {
  try {
    const Settings settings(nlohmann::json::parse(settings_json ? settings_json : "{}"));
    auto* plugin = new P(settings);
    plugin->attach_host(host);
    return plugin;
  } catch (const std::exception& e) {
    copy_error(e.what(), err, err_len);
  } catch (...) {
    copy_error("plugin constructor threw a non-standard exception", err, err_len);
  }
  return nullptr;
}

inline void destroy(void* instance) { delete static_cast<Plugin*>(instance); }

inline int32_t validate(void* instance, const char* type, const char* payload_json, char* err,
                        size_t err_len) {
  try {
    const auto payload = nlohmann::json::parse(payload_json);
    const std::string message = static_cast<Plugin*>(instance)->validate(type, payload);
    if (message.empty()) return 0;
    copy_error(message, err, err_len);
  } catch (const nlohmann::json::parse_error& e) {
    copy_error(std::string("payload is not valid JSON: ") + e.what(), err, err_len);
  } catch (const std::exception& e) {
    copy_error(e.what(), err, err_len);
  } catch (...) {
    copy_error("validate threw a non-standard exception", err, err_len);
  }
  return 1;
}

inline int32_t handle(void* instance, const jobhost_job* job, jobhost_job_ctx* ctx,
                      int64_t* retry_after_ms) {
  auto* plugin = static_cast<Plugin*>(instance);
  const jobhost_host_api* host = plugin->host();
  try {
    Job view(host, job, ctx);
    const Result r = plugin->handle(view);
    if (r.outcome() != JOBHOST_OK && !r.message().empty()) host->set_error(ctx, r.message().c_str());
    if (r.delay()) *retry_after_ms = r.delay()->count();
    return r.outcome();
  } catch (const std::exception& e) {
    host->set_error(ctx, e.what());
  } catch (...) {
    host->set_error(ctx, "handler threw a non-standard exception");
  }
  return JOBHOST_RETRY;
}

}  // namespace detail
}  // namespace jobhost::sdk

// Exports a plugin class. Further arguments are the job types it serves.
// Optionally define JOBHOST_PLUGIN_DEFAULT_RETRY as a JSON string before the
// macro to declare a default retry policy.
#ifndef JOBHOST_PLUGIN_DEFAULT_RETRY
#define JOBHOST_PLUGIN_DEFAULT_RETRY nullptr
#endif

#define JOBHOST_PLUGIN(CLASS, NAME, VERSION, ...)                                         \
  extern "C" __attribute__((visibility("default"))) uint32_t jobhost_plugin_abi_version(  \
      void) {                                                                             \
    return JOBHOST_ABI_VERSION;                                                           \
  }                                                                                       \
  extern "C" __attribute__((visibility("default"))) const jobhost_plugin*                 \
  jobhost_plugin_entry(void) {                                                            \
    static const char* const types[] = {__VA_ARGS__, nullptr};                            \
    static const jobhost_plugin descriptor = {                                            \
        JOBHOST_ABI_VERSION,                                                              \
        NAME,                                                                             \
        VERSION,                                                                          \
        types,                                                                            \
        JOBHOST_PLUGIN_DEFAULT_RETRY,                                                     \
        &::jobhost::sdk::detail::create<CLASS>,                                           \
        &::jobhost::sdk::detail::destroy,                                                 \
        &::jobhost::sdk::detail::validate,                                                \
        &::jobhost::sdk::detail::handle,                                                  \
    };                                                                                    \
    return &descriptor;                                                                   \
  }
