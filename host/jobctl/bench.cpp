// bench.cpp: placeholder until the benchmark lands.
#include "bench.hpp"

#include <CLI/CLI.hpp>

namespace jobhost::ctl {

void add_bench_command(CLI::App& app, const std::string&, const std::string&,
                       std::function<int()>& action) {
  app.add_subcommand("bench", "end-to-end benchmark")->callback([&action] {
    action = [] {
      std::fprintf(stderr, "jobctl bench: not built yet\n");
      return 1;
    };
  });
}

}  // namespace jobhost::ctl
