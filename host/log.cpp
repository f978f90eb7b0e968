// log.cpp: a JSON-lines sink, so log shippers get one parseable object a line.
#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <mutex>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace jobhost {
namespace {

class JsonSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        msg.time.time_since_epoch()).count();
    nlohmann::json line = {
        {"ts", static_cast<double>(us) / 1e6},
        {"level", spdlog::level::to_string_view(msg.level).data()},
        {"msg", std::string(msg.payload.data(), msg.payload.size())},
    };
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  void flush_() override { std::fflush(stderr); }
};

}  // namespace

void setup_logging(const std::string& format, const std::string& level) {
  const auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    throw std::invalid_argument("log level '" + level + "' is not one of trace|debug|info|warn|error");
  }
  std::shared_ptr<spdlog::logger> logger;
  if (format == "json") {
    logger = std::make_shared<spdlog::logger>("jobhost", std::make_shared<JsonSink>());
  } else if (format == "text") {
    logger = std::make_shared<spdlog::logger>(
        "jobhost", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ %v");
  } else {
    throw std::invalid_argument("log format '" + format + "' is not one of text|json");
  }
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace jobhost
