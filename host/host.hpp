// host.hpp: one jobhost process: the roles of its config, wired together, and
// its lifecycle from start-up checks to graceful shutdown.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "api.hpp"
#include "config.hpp"

namespace jobhost {

// A reason the host cannot start; the message says what to do.
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Host {
 public:
  explicit Host(Config config);
  ~Host();

  // Checks the environment, starts every role, then blocks until SIGTERM or
  // SIGINT and shuts down gracefully (DESIGN §3.7). The calling thread must
  // have SIGTERM, SIGINT and SIGHUP blocked (see block_signals). Returns the
  // process exit code. Throws StartupError when it cannot start.
  int run();

  // True when a hung handler's thread is still alive at exit; the process must
  // then leave with _exit, as that thread can never be joined.
  bool has_abandoned_threads() const;

  // Blocks the signals the host handles, in the calling thread and every
  // thread it starts afterwards.
  static void block_signals();

 private:
  struct Parts;
  int shutdown();
  ApiHooks api_hooks();
  // Loads a plugin and builds its pool (not started). Throws PluginError.
  std::shared_ptr<class WorkerPool> make_pool(const PluginConfig& pc);

  Config config_;
  std::unique_ptr<Parts> parts_;
};

// "<hostname>-<pid>", the default host id.
std::string default_host_id();

}  // namespace jobhost
