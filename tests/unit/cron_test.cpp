// Cron evaluation: which instants a schedule fires at, in UTC.
#include <chrono>
#include <string>

#include <catch2/catch.hpp>

#include "cron.hpp"

namespace {

using namespace std::chrono;
using jobhost::Cron;

sys_seconds at(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  return sys_days(year(y) / month(mo) / day(d)) + hours(h) + minutes(mi) + seconds(s);
}

sys_seconds next(const std::string& cron, sys_seconds after) { return Cron::parse(cron).next_after(after); }

}  // namespace

TEST_CASE("cron: daily at 03:00 fires at the next 03:00, strictly after the given time") {
  CHECK(next("0 3 * * *", at(2026, 11, 23, 2, 59, 59)) == at(2026, 11, 23, 3, 0, 0));
  CHECK(next("0 3 * * *", at(2026, 11, 23, 3, 0, 0)) == at(2026, 11, 24, 3, 0, 0));
  CHECK(next("0 3 * * *", at(2026, 12, 31, 4, 0, 0)) == at(2027, 1, 1, 3, 0, 0));
}

TEST_CASE("cron: steps, ranges and lists") {
  CHECK(next("*/15 * * * *", at(2026, 1, 1, 10, 7)) == at(2026, 1, 1, 10, 15));
  CHECK(next("*/15 * * * *", at(2026, 1, 1, 10, 45)) == at(2026, 1, 1, 11, 0));
  CHECK(next("0 9-17/4 * * *", at(2026, 1, 1, 14, 0)) == at(2026, 1, 1, 17, 0));
  CHECK(next("0 9-17/4 * * *", at(2026, 1, 1, 17, 0)) == at(2026, 1, 2, 9, 0));
  CHECK(next("5,35 * * * *", at(2026, 1, 1, 0, 5)) == at(2026, 1, 1, 0, 35));
}

TEST_CASE("cron: months are skipped whole, and February 29 waits for a leap year") {
  CHECK(next("0 0 1 6 *", at(2026, 1, 15)) == at(2026, 6, 1));
  CHECK(next("0 0 29 2 *", at(2026, 3, 1)) == at(2028, 2, 29));
  CHECK(next("0 0 31 * *", at(2026, 4, 1)) == at(2026, 5, 31));
}

TEST_CASE("cron: day of week, with 0 and 7 both Sunday") {
  // 2026-11-23 is a Monday.
  CHECK(next("0 8 * * 0", at(2026, 11, 23)) == at(2026, 11, 29, 8));
  CHECK(next("0 8 * * 7", at(2026, 11, 23)) == at(2026, 11, 29, 8));
  CHECK(next("0 8 * * 1-5", at(2026, 11, 27, 9)) == at(2026, 11, 30, 8));  // Friday 09:00 -> Monday
}

TEST_CASE("cron: with both day fields restricted, a day matching either fires (classic cron)") {
  // The 1st of the month, or any Friday: from Monday 2026-11-23 the next is Friday the 27th.
  CHECK(next("0 0 1 * 5", at(2026, 11, 23)) == at(2026, 11, 27));
  CHECK(next("0 0 1 * 5", at(2026, 11, 28)) == at(2026, 12, 1));
}

TEST_CASE("cron: an optional sixth field in front gives seconds") {
  CHECK(next("*/10 * * * * *", at(2026, 1, 1, 0, 0, 3)) == at(2026, 1, 1, 0, 0, 10));
  CHECK(next("* * * * * *", at(2026, 1, 1, 0, 0, 3)) == at(2026, 1, 1, 0, 0, 4));
  // Five fields fire at second 0 only.
  CHECK(next("* * * * *", at(2026, 1, 1, 0, 0, 3)) == at(2026, 1, 1, 0, 1, 0));
}

TEST_CASE("cron: matches() agrees with next_after()") {
  const Cron c = Cron::parse("30 4 1,15 * 1");
  const sys_seconds t = c.next_after(at(2026, 11, 23, 5));
  CHECK(c.matches(t));
  CHECK_FALSE(c.matches(t + seconds(1)));
  CHECK_FALSE(c.matches(t - minutes(1)));
}

TEST_CASE("cron: an expression that never fires is an error, not a hang") {
  CHECK_THROWS_WITH(next("0 0 30 2 *", at(2026, 1, 1)), Catch::Contains("no tick within eight years"));
  CHECK_THROWS_WITH(Cron::parse("0 0 * * * * *"), Catch::Contains("or 6 with seconds first; got 7"));
  CHECK_THROWS_WITH(Cron::parse("60 * * * * *"), Catch::Contains("field 1 (second)"));
}
