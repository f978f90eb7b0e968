// jobhost_plugins/settings.hpp: the one way the plugins of this repository
// read their `settings:` block. A plugin declares every key it knows; any
// other key is refused by name, with the nearest known key suggested, so a
// typo stops the host (and `jobhost --check-config`) instead of being ignored:
//
//   settings.smtp_ulr: unknown key (did you mean smtp_url?)
//
//   const jobhost_plugins::SettingsReader s(settings, {"database_url", "db_pool_size", "batch_size"});
//   PgPool pool(s.required_string("database_url"), s.integer("db_pool_size", 2, 1, 100));
//
// Built on jobhost::sdk::Settings. Every error is a jobhost::sdk::SettingsError
// whose message starts with the key's path ("settings.batch_size: ..."), which
// the host reports with the YAML file.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <jobhost/settings.hpp>
#include <nlohmann/json.hpp>

namespace jobhost_plugins {

namespace detail {

// Edits (insert, delete, replace, swap two neighbours) from a to b: a swap
// counts once, so "smtp_ulr" is one edit from "smtp_url".
inline size_t typo_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace detail

// One mapping of settings (the block itself, or one nested in it) and the
// keys it may hold. Copyable; it refers to nothing outside itself.
class SettingsReader {
 public:
  using Keys = std::initializer_list<std::string_view>;

  // The plugin's whole block, at the path "settings".
  SettingsReader(const jobhost::sdk::Settings& settings, Keys known)
      : SettingsReader(settings.json(), "settings", known) {}

  // A mapping found at `path` ("settings.retention"); refused unless it is one.
  SettingsReader(nlohmann::json mapping, std::string path, Keys known)
      : json_(std::move(mapping)), path_(std::move(path)), known_(known.begin(), known.end()) {
    if (!json_.is_object()) throw jobhost::sdk::SettingsError(path_ + ": must be a mapping");
    for (const auto& [key, _] : json_.items()) {
      if (std::find(known_.begin(), known_.end(), key) == known_.end()) fail(key, unknown_key(key));
    }
  }

  const std::string& path() const { return path_; }
  std::string where(std::string_view key) const { return path_ + "." + std::string(key); }
  bool has(std::string_view key) const { return json_.contains(std::string(key)); }
  const nlohmann::json& json() const { return json_; }

  // Throws SettingsError "<path>.<key>: <what>".
  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw jobhost::sdk::SettingsError(where(key) + ": " + what);
  }

  std::string string(std::string_view key, std::string fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = at(key);
    if (!v.is_string()) fail(key, std::string("must be a string, not ") + v.type_name());
    return v.get<std::string>();
  }

  std::string required_string(std::string_view key) const {
    if (!has(key)) fail(key, "is required");
    return string(key, {});
  }

  // A whole number in [min, max], or fallback when absent (the fallback is not checked).
  long long integer(std::string_view key, long long fallback, long long min, long long max) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = at(key);
    if (!v.is_number_integer() || v.get<long long>() < min || v.get<long long>() > max) {
      fail(key, "must be a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
                    ", got " + v.dump());
    }
    return v.get<long long>();
  }

  bool boolean(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!at(key).is_boolean()) fail(key, "must be true or false, got " + at(key).dump());
    return at(key).get<bool>();
  }

  // A list of strings; empty when absent.
  std::vector<std::string> strings(std::string_view key) const {
    if (!has(key)) return {};
    const nlohmann::json& v = at(key);
    if (!v.is_array()) fail(key, std::string("must be a list of strings, not ") + v.type_name());
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        throw jobhost::sdk::SettingsError(where(key) + "[" + std::to_string(i) + "]: must be a string, not " +
                                          v[i].type_name());
      }
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }

  // A nested mapping with its own known keys; an empty one when absent.
  SettingsReader mapping(std::string_view key, Keys known) const {
    return SettingsReader(has(key) ? at(key) : nlohmann::json::object(), where(key), known);
  }

  // A list of mappings ("settings.providers[1]"); empty when absent.
  std::vector<SettingsReader> mappings(std::string_view key, Keys known) const {
    if (!has(key)) return {};
    const nlohmann::json& v = at(key);
    if (!v.is_array()) fail(key, std::string("must be a list of mappings, not ") + v.type_name());
    std::vector<SettingsReader> out;
    for (size_t i = 0; i < v.size(); ++i) {
      out.emplace_back(v[i], where(key) + "[" + std::to_string(i) + "]", known);
    }
    return out;
  }

 private:
  const nlohmann::json& at(std::string_view key) const { return json_.at(std::string(key)); }

  std::string unknown_key(const std::string& key) const {
    // A known key is meant when at most a third of the name is wrong (a
    // typo), or when the name is the known key short of a suffix ("timeout"
    // for "timeout_ms"); the nearest one is named.
    const size_t tolerance = std::max<size_t>(2, key.size() / 3);
    std::string best;
    size_t best_distance = SIZE_MAX;
    for (const std::string& k : known_) {
      const size_t d = detail::typo_distance(key, k);
      if ((d <= tolerance || k.rfind(key + "_", 0) == 0) && d < best_distance) {
        best = k;
        best_distance = d;
      }
    }
    if (!best.empty()) return "unknown key (did you mean " + best + "?)";
    std::string all;
    for (const std::string& k : known_) all += (all.empty() ? "" : ", ") + k;
    return "unknown key (known: " + all + ")";
  }

  nlohmann::json json_;
  std::string path_;
  std::vector<std::string> known_;
};

}  // namespace jobhost_plugins
