// abi1_plugin: a plugin as a team built it against the jobhost SDK of plugin ABI
// 1.0 (the headers in sdk-abi1/, kept as released). Job type "compat.v1"; the
// payload's "mode" picks what the handler does, so a test can check every
// callback of ABI 1.0 in today's host.
#include <jobhost/plugin.hpp>

#include <chrono>
#include <stdexcept>
#include <thread>

#if JOBHOST_ABI_VERSION != 1u
#error "abi1_plugin must be built against tests/compat/sdk-abi1, not the current SDK"
#endif

namespace {

class CompatV1 : public jobhost::sdk::Plugin {
 public:
  explicit CompatV1(const jobhost::sdk::Settings& s) : tag_(s.get<std::string>("tag", "v1")) {}

  std::string validate(std::string_view, const nlohmann::json& p) override {
    if (!p.contains("mode") || !p["mode"].is_string()) return "payload.mode: must be a string";
    return {};
  }

  jobhost::sdk::Result handle(jobhost::sdk::Job& job) override {
    using jobhost::sdk::Result;
    // What the host says it is, as this plugin sees it: a 1.0 plugin must be
    // shown the 1.0 table.
    job.log_info(tag_ + ": host api abi_version=" + std::to_string(host()->abi_version));
    const std::string mode = job.payload()["mode"];
    if (mode == "ok") return Result::ok();
    if (mode == "heartbeat") {
      job.heartbeat(0.25);
      std::this_thread::sleep_for(std::chrono::milliseconds(job.payload().value("sleep_ms", 0)));
      job.heartbeat(0.75);
      std::this_thread::sleep_for(std::chrono::milliseconds(job.payload().value("sleep_ms", 0)));
      return Result::ok();
    }
    if (mode == "enqueue") {
      const std::string id = job.enqueue("noop", {{"from", std::string(job.id())}}, 7);
      job.log_info(tag_ + ": enqueued " + id);
      return Result::ok();
    }
    if (mode == "retry_after") {
      if (job.attempt() == 1) return Result::retry_after(std::chrono::milliseconds(700), "not yet");
      return Result::ok();
    }
    if (mode == "permanent") return Result::permanent("v1 says no");
    if (mode == "throw") throw std::runtime_error("v1 threw");
    if (mode == "cancel") {
      while (!job.cancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return Result::retry("v1 saw the cancellation");
    }
    return Result::permanent("unknown mode " + mode);
  }

 private:
  std::string tag_;
};

}  // namespace

JOBHOST_PLUGIN(CompatV1, "compat_v1", "1.0.0", "compat.v1")
