// plugin_loader.cpp: Boost.DLL loading and the ABI check.
#include "plugin_loader.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>

#include <boost/dll/runtime_symbol_info.hpp>
#include <nlohmann/json.hpp>

#include "job_context.hpp"

namespace jobhost {
namespace {

// Loads `path`, or a private copy of it. The copy lets a host load a new build
// of a library while the old one still runs jobs (dlopen of the same path would
// return the library already loaded), and keeps the running code safe from a
// build that overwrites the file in place.
boost::dll::shared_library open_library(const std::string& path, bool private_copy) {
  if (!std::filesystem::exists(path)) {
    throw PluginError("plugin library " + path + ": file not found (build it, or fix the path)");
  }
  std::string load_path = path;
  if (private_copy) {
    static std::atomic<int> counter{0};
    std::error_code ec;
    const auto dir = std::filesystem::temp_directory_path() / ("jobhost-plugins-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir, ec);
    const auto copy = dir / (std::to_string(counter++) + "-" + std::filesystem::path(path).filename().string());
    if (ec || !std::filesystem::copy_file(path, copy, std::filesystem::copy_options::overwrite_existing, ec)) {
      throw PluginError("plugin library " + path + ": cannot copy it to " + copy.string() + ": " + ec.message());
    }
    load_path = copy.string();
  }
  try {
    // rtld_local: two plugins may carry symbols of the same name.
    boost::dll::shared_library lib(load_path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
    if (private_copy) std::filesystem::remove(load_path);  // mapped now; nothing else needs the file
    return lib;
  } catch (const std::exception& e) {
    if (private_copy) std::filesystem::remove(load_path);
    throw PluginError("plugin library " + path + ": cannot be loaded: " + e.what());
  }
}

// The ABI rule (abi.h, DESIGN §4.1): this host loads its own major at any
// minor up to its own. Nothing else of the library is read before this check.
void check_abi(uint32_t declared, const std::string& path) {
  const uint32_t major = JOBHOST_ABI_MAJOR_OF(declared);
  const uint32_t minor = JOBHOST_ABI_MINOR_OF(declared);
  const std::string host = abi_text(JOBHOST_ABI_VERSION);
  if (major != JOBHOST_ABI_MAJOR) {
    throw PluginError("plugin library " + path + ": built for plugin ABI " + abi_text(declared) +
                      ", but this host speaks plugin ABI " + host + " and loads ABI " +
                      std::to_string(JOBHOST_ABI_MAJOR) + ".0 to " + host +
                      "; rebuild the plugin against the jobhost SDK of this host");
  }
  if (minor > JOBHOST_ABI_MINOR) {
    throw PluginError("plugin library " + path + ": built for plugin ABI " + abi_text(declared) +
                      ", newer than this host's plugin ABI " + host + " (it loads ABI " +
                      std::to_string(JOBHOST_ABI_MAJOR) + ".0 to " + host +
                      "); upgrade jobhost, or build the plugin against an SDK of ABI " + host +
                      " or older");
  }
}

const jobhost_plugin* read_descriptor(boost::dll::shared_library& lib, const std::string& path,
                                      PluginInfo& info) {
  if (!lib.has("jobhost_plugin_abi_version") || !lib.has("jobhost_plugin_entry")) {
    throw PluginError("plugin library " + path +
                      ": not a jobhost plugin (it exports no jobhost_plugin_abi_version / "
                      "jobhost_plugin_entry; use the JOBHOST_PLUGIN macro of <jobhost/plugin.hpp>)");
  }
  info.path = path;
  info.abi_version = lib.get<uint32_t()>("jobhost_plugin_abi_version")();
  check_abi(info.abi_version, path);
  info.abi_major = JOBHOST_ABI_MAJOR_OF(info.abi_version);
  info.abi_minor = JOBHOST_ABI_MINOR_OF(info.abi_version);
  const jobhost_plugin* d = lib.get<const jobhost_plugin*()>("jobhost_plugin_entry")();
  if (d == nullptr) {
    throw PluginError("plugin library " + path + ": jobhost_plugin_entry() returned NULL");
  }
  if (d->abi_version != info.abi_version) {
    throw PluginError("plugin library " + path + ": its descriptor says plugin ABI " + abi_text(d->abi_version) +
                      " but jobhost_plugin_abi_version() says " + abi_text(info.abi_version) +
                      "; both must be JOBHOST_ABI_VERSION");
  }
  // From 1.1 on the descriptor carries its size: it must cover every field of
  // the minor it declares (a plugin may be newer than the fields it fills in,
  // never older).
  if (info.abi_minor >= 1 && d->struct_size < offsetof(jobhost_plugin, struct_size) + sizeof d->struct_size) {
    throw PluginError("plugin library " + path + ": its descriptor's struct_size (" +
                      std::to_string(d->struct_size) + ") is smaller than plugin ABI " +
                      abi_text(info.abi_version) + " requires; set it to sizeof(jobhost_plugin)");
  }
  if (d->name == nullptr || d->job_types == nullptr || d->create == nullptr || d->destroy == nullptr ||
      d->validate == nullptr || d->handle == nullptr) {
    throw PluginError("plugin library " + path + ": its descriptor is incomplete (null entry)");
  }
  info.name = d->name;
  info.version = d->version ? d->version : "";
  for (const char* const* t = d->job_types; *t != nullptr; ++t) info.job_types.emplace_back(*t);
  info.default_retry_json = d->default_retry_json ? d->default_retry_json : "";
  return d;
}

RetryPolicy merge_retry(const std::string& declared_json, const RetryOverrides& yaml,
                        const std::string& path) {
  RetryPolicy p;
  if (!declared_json.empty()) {
    try {
      const auto j = nlohmann::json::parse(declared_json);
      p.max_attempts = j.value("max_attempts", p.max_attempts);
      p.base_ms = j.value("base_ms", p.base_ms);
      p.max_ms = j.value("max_ms", p.max_ms);
    } catch (const nlohmann::json::exception& e) {
      throw PluginError("plugin library " + path + ": its default retry policy is not valid: " +
                        e.what());
    }
  }
  if (yaml.max_attempts) p.max_attempts = *yaml.max_attempts;
  if (yaml.base_ms) p.base_ms = *yaml.base_ms;
  if (yaml.max_ms) p.max_ms = *yaml.max_ms;
  return p;
}

}  // namespace

std::string abi_text(uint32_t packed) {
  return std::to_string(JOBHOST_ABI_MAJOR_OF(packed)) + "." + std::to_string(JOBHOST_ABI_MINOR_OF(packed));
}

PluginInfo inspect_plugin(const std::string& path) {
  auto lib = open_library(path, false);
  PluginInfo info;
  try {
    read_descriptor(lib, path, info);
  } catch (const PluginError& e) {
    if (info.abi_version == 0) throw;  // not a plugin: nothing to show
    info.abi_major = JOBHOST_ABI_MAJOR_OF(info.abi_version);
    info.abi_minor = JOBHOST_ABI_MINOR_OF(info.abi_version);
    info.refusal = e.what();
  }
  return info;
}

std::shared_ptr<LoadedPlugin> LoadedPlugin::load(const PluginConfig& cfg) {
  const std::string path = cfg.library.string();

  std::shared_ptr<LoadedPlugin> p(new LoadedPlugin());
  try {
    p->source_ = library_identity(path);
    p->library_ = open_library(path, true);
    p->descriptor_ = read_descriptor(p->library_, path, p->info_);
    p->job_types_ = cfg.job_types.empty() ? p->info_.job_types : cfg.job_types;
    for (const auto& t : p->job_types_) {
      if (std::find(p->info_.job_types.begin(), p->info_.job_types.end(), t) ==
          p->info_.job_types.end()) {
        throw PluginError("job type '" + t + "' is not served by library " + path +
                          " (it declares: " + nlohmann::json(p->info_.job_types).dump() + ")");
      }
    }
    p->retry_ = merge_retry(p->info_.default_retry_json, cfg.retry, path);
    char err[1024] = {0};
    p->instance_ = p->descriptor_->create(host_api(p->info_.abi_minor), cfg.settings_json.c_str(), err, sizeof err);
    if (p->instance_ == nullptr) {
      throw PluginError("settings rejected by the plugin: " + std::string(err));
    }
  } catch (const PluginError& e) {
    throw PluginError("plugin '" + cfg.name + "': " + e.what());
  }

  return p;
}

std::string library_identity(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return {};
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

LoadedPlugin::~LoadedPlugin() {
  if (instance_ != nullptr) descriptor_->destroy(instance_);
}

std::string LoadedPlugin::validate(const std::string& type, const std::string& payload_json) const {
  char err[1024] = {0};
  if (descriptor_->validate(instance_, type.c_str(), payload_json.c_str(), err, sizeof err) == 0) {
    return {};
  }
  return err[0] ? std::string(err) : std::string("payload rejected by the plugin");
}

int32_t LoadedPlugin::handle(const jobhost_job& job, jobhost_job_ctx* ctx,
                             int64_t* retry_after_ms) const {
  return descriptor_->handle(instance_, &job, ctx, retry_after_ms);
}

}  // namespace jobhost
