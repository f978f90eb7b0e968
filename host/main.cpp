// main.cpp: the jobhost daemon's command line.
//   jobhost --config FILE        run
//   jobhost --check-config FILE  validate the config and its plugin libraries, then exit
//   jobhost --config FILE --roles worker,api   run only these roles (overrides host.roles)
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "config.hpp"
#include "host.hpp"
#include "job_context.hpp"
#include "log.hpp"
#include "plugin_loader.hpp"

namespace {

// Loads the config and checks every plugin library (exists, loads, speaks our
// ABI, serves the listed job types, accepts its settings: the instance is
// created and destroyed again). Prints a summary; returns the exit code.
int check_config(const std::string& file) {
  const jobhost::Config cfg = jobhost::load_config(file);
  for (size_t i = 0; i < cfg.plugins.size(); ++i) {
    const auto& pc = cfg.plugins[i];
    try {
      const jobhost::PluginInfo info = jobhost::inspect_plugin(pc.library.string());
      for (const auto& t : pc.job_types) {
        if (std::find(info.job_types.begin(), info.job_types.end(), t) == info.job_types.end()) {
          throw jobhost::PluginError("job type '" + t + "' is not served by library " + info.path);
        }
      }
      jobhost::LoadedPlugin::load(pc);  // its settings, as the plugin sees them
      std::printf("plugin %s: %s %s (ABI %u) serves %zu job types\n", pc.name.c_str(),
                  info.name.c_str(), info.version.c_str(), info.abi_version, info.job_types.size());
    } catch (const jobhost::PluginError& e) {
      std::fprintf(stderr, "%s:%d: plugins[%zu]: %s\n", cfg.file.c_str(), pc.line, i, e.what());
      return 2;
    }
  }
  std::printf("%s: ok (%zu plugins)\n", cfg.file.c_str(), cfg.plugins.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobhost: the job host daemon"};
  std::string config_file;
  std::string check_file;
  auto* run_opt = app.add_option("--config,-c", config_file, "run with this config file");
  auto* check_opt = app.add_option("--check-config", check_file, "validate a config file and exit");
  std::string roles;
  app.add_option("--roles", roles, "comma-separated roles, overriding host.roles (e.g. worker or migrator,reaper)")
      ->needs(run_opt);
  run_opt->excludes(check_opt);
  app.require_option(1, 2);
  CLI11_PARSE(app, argc, argv);

  try {
    if (!check_file.empty()) return check_config(check_file);
    jobhost::Host::block_signals();
    // A peer that closes its end (an SMTP relay over TLS, an HTTP client) must
    // fail that write with EPIPE, not kill the host: OpenSSL writes with
    // write(2), which raises SIGPIPE.
    std::signal(SIGPIPE, SIG_IGN);
    jobhost::Config cfg = jobhost::load_config(config_file);
    if (!roles.empty()) cfg.roles = jobhost::parse_roles(roles);
    jobhost::setup_logging(cfg.log_format, cfg.log_level);
    jobhost::Host host(std::move(cfg));
    const int code = host.run();
    // A hung handler's thread can never be joined; leave without waiting for it.
    if (host.has_abandoned_threads()) {
      spdlog::default_logger()->flush();
      _exit(code);
    }
    return code;
  } catch (const jobhost::ConfigError& e) {
    std::fprintf(stderr, "jobhost: invalid configuration: %s\n", e.what());
    return 2;
  } catch (const jobhost::StartupError& e) {
    std::fprintf(stderr, "jobhost: cannot start: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "jobhost: %s\n", e.what());
    return 1;
  }
}
