// log.hpp: the host's logging set-up (spdlog): text or one JSON object per line.
#pragma once

#include <string>

namespace jobhost {

// Configures the default spdlog logger. format: "text" or "json";
// level: trace|debug|info|warn|error. Throws std::invalid_argument otherwise.
void setup_logging(const std::string& format, const std::string& level);

}  // namespace jobhost
