// settings_check.hpp: for the plugins' own tests, `jobhost --check-config` on
// a generated config, expected to refuse it naming a setting.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "harness.hpp"

namespace jobhost::test {

// A copy of the config at path with the first `from` replaced by `to`; returns the copy's path.
inline std::string edited(const std::string& path, const std::string& from, const std::string& to) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  std::string yaml = text.str();
  const auto at = yaml.find(from);
  REQUIRE(at != std::string::npos);
  yaml.replace(at, from.size(), to);
  const std::string copy = path + ".edited.yaml";
  std::ofstream(copy) << yaml;
  return copy;
}

// A copy of the config at path with one setting added to the plugin entry that
// ends the file, whose settings: block comes last; returns the copy's path.
inline std::string with_setting(const std::string& path, const std::string& key_value) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  const std::string copy = path + ".more.yaml";
  std::ofstream(copy) << text.str() << "      " << key_value << "\n";
  return copy;
}

// --check-config fails on the config at path, and says `message`.
inline void check_settings_refused(const std::string& path, const std::string& message) {
  const auto [code, out] = run({bin_dir() + "/jobhost", "--check-config", path});
  INFO(out);
  CHECK(code != 0);
  CHECK_THAT(out, Catch::Contains(message));
}

}  // namespace jobhost::test
