// Invariants 3 and 6 at start-up: bad configs, bad plugin libraries and an
// evicting Redis are refused with errors that say what and where.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "harness.hpp"
#include "jobhost/abi.h"

using namespace jobhost::test;

namespace {

std::pair<int, std::string> run_host(const std::string& config) {
  return run({bin_dir() + "/jobhost", "--config", config}, {}, 30s);
}

}  // namespace

TEST_CASE("malformed YAML is refused naming the file and line", "[startup]") {
  TestDb db;
  const auto path = write_config(db, {});
  {
    std::ofstream out(path, std::ios::app);
    out << "  oops: [unclosed\n";
  }
  const auto [code, out] = run_host(path);
  CHECK(code == 2);
  CHECK_THAT(out, Catch::Contains("invalid configuration") && Catch::Contains(path + ":"));
  const auto [ccode, cout] = run({bin_dir() + "/jobhost", "--check-config", path});
  CHECK(ccode == 2);
  CHECK_THAT(cout, Catch::Contains(path + ":"));
}

TEST_CASE("a missing plugin library is refused naming the plugin and path", "[startup]") {
  TestDb db;
  HostOptions o;
  o.library = "/nonexistent/libnothing.so";
  const auto path = write_config(db, o);
  const auto [code, out] = run_host(path);
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("plugins[0]") && Catch::Contains("/nonexistent/libnothing.so: file not found"));
  const auto [ccode, cout] = run({bin_dir() + "/jobhost", "--check-config", path});
  CHECK(ccode == 2);
  CHECK_THAT(cout, Catch::Contains("file not found"));
}

TEST_CASE("a library that is not a plugin is refused", "[startup]") {
  TestDb db;
  HostOptions o;
  o.library = "/lib/x86_64-linux-gnu/libz.so.1";
  const auto [code, out] = run_host(write_config(db, o));
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("not a jobhost plugin"));
}

TEST_CASE("a plugin built for another ABI version is refused naming both versions", "[startup]") {
  TestDb db;
  HostOptions o;
  o.library = plugin_dir() + "/libwrong_abi.so";
  const auto [code, out] = run_host(write_config(db, o));
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("built for plugin ABI 2.0") &&
                      Catch::Contains("this host speaks plugin ABI " + std::to_string(JOBHOST_ABI_MAJOR) + "." +
                                      std::to_string(JOBHOST_ABI_MINOR)));
  const auto [icode, iout] = run({bin_dir() + "/jobctl", "plugin", "inspect", o.library});
  CHECK(icode == 1);
  CHECK_THAT(iout, Catch::Contains("abi           2.0") && Catch::Contains("loadable      no"));
}

TEST_CASE("a Redis that may evict keys is refused", "[startup]") {
  TestDb db;
  // A Redis of our own with the seeds' allkeys-lru policy.
  const auto dir = std::filesystem::temp_directory_path() / ("jh-evict-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  Process redis({"/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", "56391", "--save", "",
                 "--appendonly", "no", "--dir", dir.string(), "--maxmemory-policy", "allkeys-lru"},
                (dir / "redis.log").string());
  REQUIRE(redis.wait_for_log("Ready to accept connections", 10s));
  HostOptions o;
  o.redis_url = "redis://127.0.0.1:56391";
  const auto [code, out] = run_host(write_config(db, o));
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("maxmemory-policy 'allkeys-lru'") && Catch::Contains("noeviction"));
  redis.signal(SIGTERM);
  redis.wait(5s);
}

TEST_CASE("a host refuses a database whose schema is not migrated", "[startup]") {
  TestDb db;
  db.scalar("DROP SCHEMA jobhost CASCADE");
  const auto [code, out] = run_host(write_config(db, {}));
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("run `jobctl db migrate` first"));
}

TEST_CASE("an unset environment variable in the config is named", "[startup]") {
  TestDb db;
  HostOptions o;
  o.extra_yaml = "api: { token: \"${JOBHOST_TEST_SURELY_UNSET}\" }\n";
  const auto [code, out] = run_host(write_config(db, o));
  CHECK(code == 2);
  CHECK_THAT(out, Catch::Contains("JOBHOST_TEST_SURELY_UNSET"));
}

TEST_CASE("the --roles option overrides host.roles, and an unknown role is refused by name", "[startup]") {
  TestDb db;
  const auto path = write_config(db, {});
  const auto [code, out] = run({bin_dir() + "/jobhost", "--config", path, "--roles", "worker,bogus"});
  CHECK(code == 2);
  CHECK_THAT(out, Catch::Contains("--roles: unknown role \"bogus\""));
  Process host({bin_dir() + "/jobhost", "--config", path, "--roles", "reaper,scheduler"},
               (std::filesystem::temp_directory_path() / (db.prefix() + "-roles.log")).string());
  REQUIRE(host.wait_for_log(" ready", 20s));
  CHECK_THAT(host.log(), Catch::Contains("roles=reaper,scheduler"));
  host.signal(SIGTERM);
  CHECK(host.wait(20s) == 0);
}

TEST_CASE("the default config/jobhost.yaml loads every plugin of the repository", "[startup]") {
  // As shipped, except that library paths point at this build's plugins.
  std::ifstream in(source_dir() + "/config/jobhost.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t at = text.find("../build/plugins/"); at != std::string::npos; at = text.find("../build/plugins/", at)) {
    text.replace(at, std::string("../build/plugins/").size(), plugin_dir() + "/");
  }
  TestDb db;
  const auto dir = std::filesystem::temp_directory_path() / (db.prefix() + "-default-config");
  std::filesystem::create_directories(dir / "imports");
  std::filesystem::create_directories(dir / "exports");
  const auto path = (dir / "jobhost.yaml").string();
  std::ofstream(path) << text;
  const auto [code, out] = run({bin_dir() + "/jobhost", "--check-config", path},
                               {"JOBHOST_IMPORT_ROOT=" + (dir / "imports").string(),
                                "JOBHOST_EXPORT_ROOT=" + (dir / "exports").string()});
  INFO(out);
  CHECK(code == 0);
  // Every plugin folder of the repository is in the default deployment.
  for (const auto& entry : std::filesystem::directory_iterator(source_dir() + "/plugins")) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name == "common") continue;
    CHECK_THAT(out, Catch::Contains("plugin " + name + ": " + name + " "));
  }
  std::filesystem::remove_all(dir);
}
