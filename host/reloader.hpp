// reloader.hpp: hot reload on SIGHUP (DESIGN §5). Re-reads the YAML; if it is
// invalid, or a new or changed plugin cannot be loaded, nothing changes.
// Otherwise new plugins start, removed ones drain and unload, a plugin whose
// library (or instance settings) changed is replaced — new jobs go to the new
// pool at once, the old pool finishes its running jobs, hands back the ones it
// had not started, and is unloaded — and a pool whose sizing alone changed is
// resized in place. Jobs are never lost or run twice: a pool that stops
// fetching hands back its unstarted leases through the completer's attempt
// guard, as at shutdown. Settings only a restart applies are named in a warning.
#pragma once

#include <functional>
#include <memory>

#include "config.hpp"
#include "flow_runtime.hpp"
#include "pool_set.hpp"
#include "queue_registry.hpp"

namespace jobhost {

class Reloader {
 public:
  // Loads a plugin and builds its pool, not started. Throws PluginError.
  using PoolFactory = std::function<std::shared_ptr<WorkerPool>(const PluginConfig&)>;

  // `running` is the configuration in force; a reload that is applied
  // replaces its plugin list.
  Reloader(Config& running, PoolSet& pools, PoolFactory make_pool, const QueueRegistry& registry,
           FlowRuntime& flow)
      : running_(running), pools_(pools), make_pool_(std::move(make_pool)), registry_(registry), flow_(flow) {}

  // One SIGHUP. Counts the result in config_reloads_total; never throws.
  void reload();

 private:
  Config& running_;
  PoolSet& pools_;
  PoolFactory make_pool_;
  const QueueRegistry& registry_;
  FlowRuntime& flow_;
};

}  // namespace jobhost
