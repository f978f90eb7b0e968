// bench.hpp: `jobctl bench`, the end-to-end benchmark (DESIGN §7).
#pragma once

#include <functional>
#include <string>

namespace CLI { class App; }

namespace jobhost::ctl {

// Adds the `bench` subcommand to app; when chosen it sets `action`.
// database_url / redis_url are read when the action runs.
void add_bench_command(CLI::App& app, const std::string& database_url, const std::string& redis_url,
                       std::function<int()>& action);

}  // namespace jobhost::ctl
