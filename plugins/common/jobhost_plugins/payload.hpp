// jobhost_plugins/payload.hpp: checks for payload fields that name the field
// in their message, as DESIGN §4 asks ("payload.recipient: must be ...").
// Each returns an empty string when the field is acceptable.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace jobhost_plugins {

inline std::string field_name(std::string_view key) { return "payload." + std::string(key); }

// A non-empty string of at most max_len bytes.
inline std::string need_string(const nlohmann::json& p, std::string_view key, size_t max_len = 1000) {
  const std::string k(key);
  if (!p.contains(k)) return field_name(key) + ": is required";
  if (!p[k].is_string()) return field_name(key) + ": must be a string, not " + p[k].type_name();
  const auto& s = p[k].get_ref<const std::string&>();
  if (s.empty()) return field_name(key) + ": must not be empty";
  if (s.size() > max_len) return field_name(key) + ": is longer than " + std::to_string(max_len) + " bytes";
  return {};
}

// Absent, or as need_string.
inline std::string opt_string(const nlohmann::json& p, std::string_view key, size_t max_len = 1000) {
  return p.contains(std::string(key)) ? need_string(p, key, max_len) : std::string();
}

// A JSON object (absent allowed when optional).
inline std::string need_object(const nlohmann::json& p, std::string_view key, bool optional = false) {
  const std::string k(key);
  if (!p.contains(k)) return optional ? std::string() : field_name(key) + ": is required";
  if (!p[k].is_object()) return field_name(key) + ": must be an object, not " + p[k].type_name();
  return {};
}

// Absent, or true/false.
inline std::string opt_bool(const nlohmann::json& p, std::string_view key) {
  const std::string k(key);
  if (p.contains(k) && !p[k].is_boolean()) return field_name(key) + ": must be true or false";
  return {};
}

// The first non-empty message of the checks given, else empty.
template <typename... Messages>
std::string first_error(Messages&&... messages) {
  std::string out;
  ((out.empty() && !std::string_view(messages).empty() ? (out = messages, 0) : 0), ...);
  return out;
}

}  // namespace jobhost_plugins
