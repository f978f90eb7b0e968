// The plain claim's per-band bounds (host/migrator.hpp, ClaimFloors): none
// on the first claim and on every rescan, otherwise kSlack before the oldest
// run_at the band's last claim took.
#include <catch2/catch.hpp>

#include "migrator.hpp"

using jobhost::ClaimFloors;
using Clock = std::chrono::steady_clock;

TEST_CASE("claim floors: no bound first, then the slack before the oldest job taken, and a rescan every kRescan",
          "[unit][migrator]") {
  ClaimFloors f;
  const auto t0 = Clock::now();
  // The first claim has no bound, and neither does a band that never took a job.
  CHECK(f.next(t0) == ClaimFloors::Bounds{});
  f.took(1, 5'000'000'000);
  const ClaimFloors::Bounds after = f.next(t0 + std::chrono::milliseconds(10));
  CHECK_FALSE(after[0].has_value());
  REQUIRE(after[1].has_value());
  CHECK(*after[1] == 5'000'000'000 - ClaimFloors::kSlack.count());
  CHECK_FALSE(after[2].has_value());
  // A later claim moves the band's bound to what it took.
  f.took(1, 6'000'000'000);
  CHECK(f.next(t0 + std::chrono::milliseconds(20))[1] == 6'000'000'000 - ClaimFloors::kSlack.count());
  // kRescan after the last claim without bounds comes another; the bounds are kept for after it.
  CHECK(f.next(t0 + ClaimFloors::kRescan) == ClaimFloors::Bounds{});
  CHECK(f.next(t0 + ClaimFloors::kRescan + std::chrono::milliseconds(1))[1] ==
        6'000'000'000 - ClaimFloors::kSlack.count());
  CHECK(f.current()[1] == 6'000'000'000 - ClaimFloors::kSlack.count());
}

TEST_CASE("claim floors: a slow rescan pushes the next one back by kRescanShare times its length", "[unit][migrator]") {
  ClaimFloors f;
  const auto t0 = Clock::now();
  REQUIRE(f.next(t0) == ClaimFloors::Bounds{});
  f.took(0, 7'000'000'000);
  // A fast rescan: the next one after kRescan.
  f.rescanned(t0, std::chrono::milliseconds(5));
  CHECK(f.rescan_at() == t0 + ClaimFloors::kRescan);
  // One that took 500 ms: the next one 10 s after it began.
  const auto t1 = f.rescan_at();
  REQUIRE(f.next(t1) == ClaimFloors::Bounds{});
  f.rescanned(t1, std::chrono::milliseconds(500));
  CHECK(f.rescan_at() == t1 + std::chrono::milliseconds(500) * ClaimFloors::kRescanShare);
  CHECK(f.next(t1 + ClaimFloors::kRescan)[0] == 7'000'000'000 - ClaimFloors::kSlack.count());
}

TEST_CASE("claim floors without rescans: always the bounds, lowered to what the probe found below them",
          "[unit][migrator]") {
  ClaimFloors f(false);
  const auto t0 = Clock::now();
  CHECK(f.next(t0) == ClaimFloors::Bounds{});
  f.took(1, 5'000'000'000);
  // No claim without bounds, however long it has been.
  CHECK(f.next(t0 + ClaimFloors::kRescan * 100)[1] == 5'000'000'000 - ClaimFloors::kSlack.count());
  CHECK(f.rescan_at() == Clock::time_point::max());
  // A job found below the floor lowers it; one above it, or in a band with no
  // floor (its claims have no bound), changes nothing.
  f.lower(1, 1'000'000'000);
  CHECK(f.next(t0)[1] == 1'000'000'000);
  f.lower(1, 3'000'000'000);
  CHECK(f.next(t0)[1] == 1'000'000'000);
  f.lower(0, 2'000'000'000);
  CHECK_FALSE(f.next(t0)[0].has_value());
  // The claim that takes it moves the floor on again.
  f.took(1, 6'000'000'000);
  CHECK(f.next(t0)[1] == 6'000'000'000 - ClaimFloors::kSlack.count());
}
