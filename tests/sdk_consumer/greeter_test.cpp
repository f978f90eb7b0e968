// The greeter plugin's own unit tests, as its team writes them: handle() run
// in-process through the installed SDK's <jobhost/testing.hpp>, no jobhost.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <jobhost/testing.hpp>

extern "C" const jobhost_plugin* jobhost_plugin_entry(void);

using jobhost::sdk::testing::CreateError;
using jobhost::sdk::testing::Harness;

TEST_CASE("greeter greets by name and enqueues one follow-up with the greeting") {
  Harness h(jobhost_plugin_entry(), {{"greeting", "Hello"}});
  const auto run = h.run({"greet", {{"name", "Ada"}}});
  CHECK(run.ok());
  CHECK(run.logged("Hello, Ada"));
  REQUIRE(run.enqueued.size() == 1);
  CHECK(run.enqueued[0].type == "noop");
  CHECK(run.enqueued[0].payload == nlohmann::json{{"greeting", "Hello, Ada"}, {"from", "00000000-0000-7000-8000-000000000001"}});
}

TEST_CASE("greeter fails the attempt when its follow-up cannot be stored") {
  Harness h(jobhost_plugin_entry(), {{"greeting", "Hi"}});
  h.fail_enqueues("database is down");
  const auto run = h.run({"greet", {{"name", "Bob"}}});
  CHECK(run.retried());
  CHECK(run.error == "database is down");
}

TEST_CASE("greeter refuses a payload without a name and settings without a greeting") {
  Harness h(jobhost_plugin_entry(), {{"greeting", "Hi"}});
  CHECK(h.validate("greet", {{"name", 1}}) == "payload.name: must be a string");
  CHECK_THROWS_WITH(Harness(jobhost_plugin_entry(), nlohmann::json::object()),
                    Catch::Contains("settings.greeting: is required"));
}
