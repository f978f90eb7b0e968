// greeter: job type "greet". Reads its greeting from settings, validates the
// payload, and enqueues a follow-up "noop" job carrying the greeting, so a
// test can see that settings, validation and follow-up enqueues all work.
#include <jobhost/plugin.hpp>

namespace {

class Greeter : public jobhost::sdk::Plugin {
 public:
  explicit Greeter(const jobhost::sdk::Settings& s) : greeting_(s.require<std::string>("greeting")) {}

  std::string validate(std::string_view, const nlohmann::json& p) override {
    if (!p.contains("name") || !p["name"].is_string()) return "payload.name: must be a string";
    return {};
  }

  jobhost::sdk::Result handle(jobhost::sdk::Job& job) override {
    const std::string text = greeting_ + ", " + job.payload()["name"].get<std::string>();
    job.log_info(text);
    job.enqueue("noop", {{"greeting", text}, {"from", std::string(job.id())}});
    return jobhost::sdk::Result::ok();
  }

 private:
  std::string greeting_;
};

}  // namespace

JOBHOST_PLUGIN(Greeter, "greeter", "0.3.0", "greet")
