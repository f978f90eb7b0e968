// cron.hpp: cron expressions in UTC, as `schedules:` entries use them.
//
// Five fields, "minute hour day-of-month month day-of-week", each a list of *,
// N, A-B, */S or A-B/S; day of week 0-7 with both 0 and 7 Sunday. As in the
// classic cron, when both day fields are restricted a day matching either one
// is a match. A sixth field in front, seconds, may be given for schedules finer
// than a minute ("*/10 * * * * *": every ten seconds).
#pragma once

#include <bitset>
#include <chrono>
#include <string>

namespace jobhost {

class Cron {
 public:
  // Throws std::invalid_argument naming the field and what is wrong with it.
  static Cron parse(const std::string& expression);

  // The first tick strictly after t, to the second. Throws std::runtime_error
  // when none exists within eight years (e.g. "0 0 30 2 *", February 30).
  std::chrono::sys_seconds next_after(std::chrono::sys_seconds t) const;

  bool matches(std::chrono::sys_seconds t) const;
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  std::bitset<60> seconds_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_of_month_;  // 1..31
  std::bitset<13> months_;         // 1..12
  std::bitset<7> days_of_week_;    // 0..6, Sunday 0
  bool dom_restricted_ = false;
  bool dow_restricted_ = false;
};

}  // namespace jobhost
