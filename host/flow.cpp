// flow.cpp: the pure parts of flow control's configuration.
#include "flow.hpp"

#include <stdexcept>

namespace jobhost {

const LimiterConfig* find_limiter(const std::vector<LimiterConfig>& limiters, std::string_view name) {
  const LimiterConfig* best = nullptr;
  for (const auto& l : limiters) {
    if (!l.matches(name)) continue;
    if (!l.is_pattern()) return &l;
    if (best == nullptr || l.name.size() > best->name.size()) best = &l;
  }
  return best;
}

nlohmann::json limits_json(const Limits& l) {
  nlohmann::json out = nlohmann::json::object();
  if (l.concurrency) out["concurrency"] = *l.concurrency;
  if (l.rate) {
    out["rate"] = {{"limit", l.rate->limit},
                   {"per_ms", l.rate->per_ms},
                   {"burst", l.rate->burst > 0 ? l.rate->burst : l.rate->limit}};
  }
  return out;
}

nlohmann::json flow_json(const FlowConfig& f) {
  nlohmann::json out = limits_json(f.queue);
  out["key"] = f.key_pointer;
  out["fair"] = f.fair;
  out["per_key"] = limits_json(f.per_key);
  nlohmann::json overrides = nlohmann::json::object();
  for (const auto& [key, l] : f.overrides) overrides[key] = limits_json(l.over(f.per_key));
  out["overrides"] = overrides;
  return out;
}

std::vector<std::string> parse_json_pointer(std::string_view pointer) {
  if (pointer.empty() || pointer.front() != '/') {
    throw std::invalid_argument("must be a JSON pointer starting with '/', such as /tenant_id; got '" +
                                std::string(pointer) + "'");
  }
  std::vector<std::string> tokens;
  std::string token;
  for (size_t i = 1; i <= pointer.size(); ++i) {
    if (i == pointer.size() || pointer[i] == '/') {
      tokens.push_back(std::move(token));
      token.clear();
      continue;
    }
    if (pointer[i] != '~') {
      token += pointer[i];
      continue;
    }
    // RFC 6901: ~0 is '~' and ~1 is '/'; a '~' followed by anything else is malformed.
    if (i + 1 < pointer.size() && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
      token += pointer[i + 1] == '0' ? '~' : '/';
      ++i;
      continue;
    }
    throw std::invalid_argument("'~' at position " + std::to_string(i) + " of '" + std::string(pointer) +
                                "' must be followed by 0 (for ~) or 1 (for /)");
  }
  return tokens;
}

}  // namespace jobhost
