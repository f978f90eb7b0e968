// The plugins' shared toolkit, pure logic: the settings reader, hex and
// PostgreSQL array literals.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <jobhost/settings.hpp>
#include <jobhost_plugins/hex.hpp>
#include <jobhost_plugins/pg_array.hpp>
#include <jobhost_plugins/settings.hpp>

using jobhost::sdk::Settings;
using jobhost::sdk::SettingsError;
using jobhost_plugins::SettingsReader;
using nlohmann::json;

namespace {

SettingsReader read(const char* text) {
  return SettingsReader(Settings(json::parse(text)),
                        {"smtp_url", "timeout_ms", "allow_cidrs", "retention", "relays"});
}

}  // namespace

TEST_CASE("settings: an unknown key is refused by name, with the known key it is nearest to") {
  CHECK_THROWS_WITH(read(R"({"smtp_ulr": "x"})"), "settings.smtp_ulr: unknown key (did you mean smtp_url?)");
  CHECK_THROWS_WITH(read(R"({"timeout": 5})"), "settings.timeout: unknown key (did you mean timeout_ms?)");
  CHECK_THROWS_WITH(read(R"({"allow_cidr": []})"),
                    "settings.allow_cidr: unknown key (did you mean allow_cidrs?)");
  CHECK_THROWS_WITH(
      read(R"({"workers": 5})"),
      "settings.workers: unknown key (known: smtp_url, timeout_ms, allow_cidrs, retention, relays)");
  CHECK_NOTHROW(read(R"({"smtp_url": "x", "timeout_ms": 5})"));
  CHECK_THROWS_WITH(SettingsReader(json::array(), "settings.retention", {}),
                    "settings.retention: must be a mapping");
}

TEST_CASE("settings: nested mappings and lists of mappings name their path") {
  const SettingsReader s = read(R"({"retention": {"dayz": 3}, "relays": [{"url": "a"}, {"ulr": "b"}]})");
  CHECK_THROWS_WITH(s.mapping("retention", {"days"}),
                    "settings.retention.dayz: unknown key (did you mean days?)");
  CHECK_THROWS_WITH(s.mappings("relays", {"url"}), "settings.relays[1].ulr: unknown key (did you mean url?)");
  CHECK(read("{}").mapping("retention", {"days"}).integer("days", 7, 1, 10) == 7);
  CHECK_THROWS_WITH(read(R"({"relays": [3]})").mappings("relays", {"url"}),
                    "settings.relays[0]: must be a mapping");
}

TEST_CASE("settings: typed getters check type and range, naming the key") {
  const SettingsReader s =
      read(R"({"smtp_url": 5, "timeout_ms": 0, "allow_cidrs": ["a", 7], "relays": "x"})");
  CHECK_THROWS_WITH(s.string("smtp_url", ""), "settings.smtp_url: must be a string, not number");
  CHECK_THROWS_WITH(s.required_string("retention"), "settings.retention: is required");
  CHECK_THROWS_WITH(s.integer("timeout_ms", 5, 1, 100),
                    "settings.timeout_ms: must be a whole number from 1 to 100, got 0");
  CHECK_THROWS_WITH(s.strings("allow_cidrs"), "settings.allow_cidrs[1]: must be a string, not number");
  CHECK_THROWS_WITH(s.mappings("relays", {}), "settings.relays: must be a list of mappings, not string");
  CHECK_THROWS_AS(s.boolean("smtp_url", false), SettingsError);
  const SettingsReader ok =
      read(R"({"smtp_url": "smtp://h", "timeout_ms": 100, "allow_cidrs": ["10.0.0.0/8"]})");
  CHECK(ok.string("smtp_url", "") == "smtp://h");
  CHECK(ok.integer("timeout_ms", 5, 1, 100) == 100);
  CHECK(ok.strings("allow_cidrs") == std::vector<std::string>{"10.0.0.0/8"});
  CHECK(ok.strings("relays").empty());
}

TEST_CASE("hex: bytes as lower-case pairs") {
  const unsigned char bytes[] = {0x00, 0x0f, 0xa5, 0xff};
  CHECK(jobhost_plugins::hex(bytes, sizeof bytes) == "000fa5ff");
  CHECK(jobhost_plugins::hex(bytes, 0).empty());
}

TEST_CASE("pg_array: every element quoted, quotes and backslashes escaped") {
  CHECK(jobhost_plugins::pg_array({}) == "{}");
  CHECK(jobhost_plugins::pg_array({"a", "b,c", "NULL", "say \"hi\"", "back\\slash", ""}) ==
        R"({"a","b,c","NULL","say \"hi\"","back\\slash",""})");
}
