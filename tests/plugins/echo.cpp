// echo: a test plugin built twice, as 1.0.0 and 2.0.0 (ECHO_VERSION), to show a
// hot reload swapping a library. Each run logs "echo <version> ran"; the
// payload's sleep_ms keeps a job in flight across a reload.
#include <chrono>
#include <thread>

#include <jobhost/plugin.hpp>

#ifndef ECHO_VERSION
#define ECHO_VERSION "0.0.0"
#endif

namespace {

class Echo : public jobhost::sdk::Plugin {
 public:
  explicit Echo(const jobhost::sdk::Settings&) {}

  jobhost::sdk::Result handle(jobhost::sdk::Job& job) override {
    const long long ms = job.payload().value("sleep_ms", 0LL);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < until) {
      if (job.cancelled()) return jobhost::sdk::Result::retry("echo: cancelled");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    job.log_info("echo " ECHO_VERSION " ran");
    return jobhost::sdk::Result::ok();
  }
};

}  // namespace

JOBHOST_PLUGIN(Echo, "echo", ECHO_VERSION, "echo")
