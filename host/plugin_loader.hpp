// plugin_loader.hpp: loading a plugin library with Boost.DLL, checking its ABI,
// and building its instance from the YAML settings.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "backoff.hpp"
#include "config.hpp"
#include "jobhost/abi.h"

namespace jobhost {

// Thrown when a library cannot be used; the message says which library, why,
// and what to do.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a library declares about itself, read without creating an instance.
struct PluginInfo {
  std::string path;
  uint32_t abi_version = 0;  // as the library declares it (JOBHOST_ABI_MAKE)
  uint32_t abi_major = 0;
  uint32_t abi_minor = 0;
  std::string name;
  std::string version;
  std::vector<std::string> job_types;
  std::string default_retry_json;  // empty when none
  // inspect_plugin only: why this host would refuse the library ("" when it
  // loads it); name, version and job types are then unknown.
  std::string refusal;
};

// "1.1" for a packed ABI version (1.0 for the plain 1 of ABI 1.0 libraries).
std::string abi_text(uint32_t packed);

// Reads a library's declaration (for `jobctl plugin inspect`). A library of an
// ABI this host does not load comes back with its version and `refusal` set.
// Throws PluginError when the file is no jobhost plugin at all.
PluginInfo inspect_plugin(const std::string& path);

// A loaded library and one instance of its plugin. Shared by every worker of
// the plugin: the library stays loaded while any holder (a thread running a
// handler, even an abandoned hung one) keeps a reference.
class LoadedPlugin {
 public:
  // Loads cfg.library, checks the ABI, checks that cfg.job_types are among
  // those the plugin declares, and creates the instance from cfg.settings_json
  // with the host callbacks of the plugin's ABI minor (host_api(minor)).
  static std::shared_ptr<LoadedPlugin> load(const PluginConfig& cfg);
  ~LoadedPlugin();
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  const PluginInfo& info() const { return info_; }
  // The library file as it was when loaded (see library_identity): a reload
  // compares it to tell a new build at the same path.
  const std::string& source() const { return source_; }
  // The job types this deployment routes to the plugin.
  const std::vector<std::string>& job_types() const { return job_types_; }
  // The YAML's retry: keys over the plugin's declared default.
  const RetryPolicy& retry() const { return retry_; }

  // Empty when the payload is acceptable; else the plugin's message.
  std::string validate(const std::string& type, const std::string& payload_json) const;
  int32_t handle(const jobhost_job& job, jobhost_job_ctx* ctx, int64_t* retry_after_ms) const;

 private:
  LoadedPlugin() = default;

  boost::dll::shared_library library_;  // declared first: destroyed last
  const jobhost_plugin* descriptor_ = nullptr;
  void* instance_ = nullptr;
  PluginInfo info_;
  std::vector<std::string> job_types_;
  RetryPolicy retry_;
  std::string source_;
};

// Device, inode, size and modification time of a file, as text; "" when it
// cannot be read. Changes whenever the file is replaced or rewritten.
std::string library_identity(const std::string& path);

}  // namespace jobhost
