// jobhost/settings.hpp: typed access to a plugin's `settings:` block.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace jobhost::sdk {

// Thrown from a plugin constructor when a setting is missing or of the wrong
// type; its message names the key, and the host reports it with the YAML file.
class SettingsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The plugin's settings: block from the YAML, as JSON.
class Settings {
 public:
  explicit Settings(nlohmann::json json) : json_(std::move(json)) {
    if (!json_.is_object()) throw SettingsError("settings: must be a mapping");
  }

  const nlohmann::json& json() const { return json_; }
  bool has(const std::string& key) const { return json_.contains(key); }

  // The value at key, converted to T; `fallback` when absent. Throws
  // SettingsError naming the key when present with the wrong type.
  template <typename T>
  T get(const std::string& key, T fallback) const {
    if (!json_.contains(key)) return fallback;
    return convert<T>(key);
  }

  // The value at key; throws SettingsError naming the key when absent.
  template <typename T>
  T require(const std::string& key) const {
    if (!json_.contains(key)) throw SettingsError("settings." + key + ": is required");
    return convert<T>(key);
  }

 private:
  template <typename T>
  T convert(const std::string& key) const {
    try {
      return json_.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      throw SettingsError("settings." + key + ": has the wrong type (" +
                          std::string(json_.at(key).type_name()) + ")");
    }
  }

  nlohmann::json json_;
};

}  // namespace jobhost::sdk
