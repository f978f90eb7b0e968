// The SDK contract (DESIGN §4): installed with `cmake --install`, a plugin
// builds out-of-tree with find_package(jobhost_sdk), and a host runs it.
#include <unistd.h>

#include <filesystem>

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace jobhost::test;

TEST_CASE("a plugin built out-of-tree against the installed SDK runs in the host", "[sdk]") {
  const auto work = std::filesystem::temp_directory_path() / ("jh-sdk-" + std::to_string(getpid()));
  std::filesystem::remove_all(work);
  const std::string prefix = (work / "prefix").string();
  const std::string build = (work / "build").string();

  auto [icode, iout] = run({"/usr/bin/cmake", "--install", bin_dir() + "/..", "--prefix", prefix}, {}, 120s);
  INFO(iout);
  REQUIRE(icode == 0);
  REQUIRE(std::filesystem::exists(prefix + "/include/jobhost/plugin.hpp"));

  auto [ccode, cout] = run({"/usr/bin/cmake", "-S", source_dir() + "/tests/sdk_consumer", "-B", build,
                            "-DCMAKE_PREFIX_PATH=" + prefix}, {}, 120s);
  INFO(cout);
  REQUIRE(ccode == 0);
  auto [bcode, bout] = run({"/usr/bin/cmake", "--build", build}, {}, 300s);
  INFO(bout);
  REQUIRE(bcode == 0);
  const std::string library = build + "/libgreeter.so";
  REQUIRE(std::filesystem::exists(library));

  // The team's own unit tests, on the installed <jobhost/testing.hpp>.
  auto [tcode, tout] = run({build + "/greeter_tests"}, {}, 60s);
  INFO(tout);
  CHECK(tcode == 0);
  CHECK_THAT(tout, Catch::Contains("All tests passed") && Catch::Contains("3 test cases"));

  auto [pcode, pout] = run({bin_dir() + "/jobctl", "plugin", "inspect", library});
  CHECK(pcode == 0);
  CHECK_THAT(pout, Catch::Contains("greeter") && Catch::Contains("0.3.0") && Catch::Contains("greet"));

  TestDb db;
  HostOptions o;
  o.extra_yaml = "  - name: greeter\n    library: " + library +
                 "\n    concurrency: { min: 1, max: 2 }\n    settings: { greeting: \"Hello\" }\n";
  auto host = start_host(write_config(db, o));
  const auto id = db.enqueue("greet", R"({"name": "Ada"})");
  const auto bad = db.enqueue("greet", R"({"name": 42})");
  REQUIRE(eventually([&] { return db.status(id) == "completed"; }, 20s));
  REQUIRE(eventually([&] {
    return db.count("SELECT count(*) FROM jobhost.jobs WHERE queue_name = 'noop' AND status = 'completed' "
                    "AND payload = jsonb_build_object('greeting', 'Hello, Ada', 'from', '" + id + "')") == 1;
  }, 20s));
  REQUIRE(eventually([&] { return db.status(bad) == "failed"; }, 20s));
  CHECK(db.field(bad, "last_error_message") ==
        "invalid payload: payload.name: must be a string");
  CHECK_THAT(host->log(), Catch::Contains("Hello, Ada"));

  // The same library with its required setting missing is refused, naming it.
  HostOptions missing;
  missing.extra_yaml = "  - name: greeter\n    library: " + library + "\n    settings: {}\n";
  const auto [code, out] = run({bin_dir() + "/jobhost", "--config", write_config(db, missing, "missing")});
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("plugins[1]") && Catch::Contains("settings rejected by the plugin") &&
                      Catch::Contains("settings.greeting: is required"));
  std::filesystem::remove_all(work);
}
