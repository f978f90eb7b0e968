// cron.cpp: parsing and evaluating cron expressions (see cron.hpp).
#include "cron.hpp"

#include <array>
#include <charconv>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace jobhost {
namespace {

using namespace std::chrono;

struct Field {
  const char* name;
  int lo;
  int hi;
};

constexpr Field kSecond{"second", 0, 59};
constexpr std::array<Field, 5> kFields{{
    {"minute", 0, 59},
    {"hour", 0, 23},
    {"day of month", 1, 31},
    {"month", 1, 12},
    {"day of week", 0, 7},
}};

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::optional<int> parse_number(std::string_view s) {
  int value = 0;
  const char* end = s.data() + s.size();
  const auto [stop, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || s[0] == '-' || ec != std::errc() || stop != end) return std::nullopt;
  return value;
}

int number(std::string_view s, const Field& field) {
  const auto value = parse_number(s);
  if (!value) throw std::invalid_argument(quote(s) + " is not a number");
  if (*value < field.lo || *value > field.hi) {
    throw std::invalid_argument(std::to_string(*value) + " is out of range " + std::to_string(field.lo) +
                                "-" + std::to_string(field.hi));
  }
  return *value;
}

// One comma-separated item: *, n, a-b, */n or a-b/n; sets its values in bits.
void parse_item(std::string_view item, const Field& field, std::vector<bool>& bits) {
  const std::size_t slash = item.find('/');
  const std::string_view base = item.substr(0, slash);
  int step = 1;
  if (slash != std::string_view::npos) {
    const auto n = parse_number(item.substr(slash + 1));
    if (!n || *n < 1 || *n > field.hi) {
      throw std::invalid_argument("the step in " + quote(item) + " must be between 1 and " +
                                  std::to_string(field.hi));
    }
    if (base != "*" && base.find('-') == std::string_view::npos) {
      throw std::invalid_argument("a step follows * or a range, as in */5 or 0-30/5; got " + quote(item));
    }
    step = *n;
  }
  int first = field.lo, last = field.hi;
  if (base != "*") {
    const std::size_t dash = base.find('-');
    first = number(base.substr(0, dash), field);
    last = dash == std::string_view::npos ? first : number(base.substr(dash + 1), field);
    if (first > last) throw std::invalid_argument("the range " + quote(base) + " runs backwards");
  }
  for (int v = first; v <= last; v += step) bits[static_cast<std::size_t>(v)] = true;
}

// A whole field; returns its values as flags indexed by value.
std::vector<bool> parse_field(std::string_view text, const Field& field, std::size_t position) {
  std::vector<bool> bits(static_cast<std::size_t>(field.hi) + 1, false);
  try {
    std::size_t start = 0;
    while (true) {
      const std::size_t comma = text.find(',', start);
      const std::string_view item = text.substr(start, comma - start);
      if (item.empty()) throw std::invalid_argument("empty item in a list");
      parse_item(item, field, bits);
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("field " + std::to_string(position + 1) + " (" + field.name + ") " +
                                quote(text) + ": " + e.what());
  }
  return bits;
}

template <std::size_t N>
std::bitset<N> to_bitset(const std::vector<bool>& bits) {
  std::bitset<N> out;
  for (std::size_t i = 0; i < bits.size() && i < N; ++i) out[i] = bits[i];
  return out;
}

}  // namespace

Cron Cron::parse(const std::string& expression) {
  std::istringstream in(expression);
  std::vector<std::string> fields;
  for (std::string field; in >> field;) fields.push_back(field);
  if (fields.size() != 5 && fields.size() != 6) {
    throw std::invalid_argument(
        "must have 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first; got " +
        std::to_string(fields.size()));
  }
  Cron c;
  c.text_ = expression;
  std::size_t offset = 0;
  if (fields.size() == 6) {
    c.seconds_ = to_bitset<60>(parse_field(fields[0], kSecond, 0));
    offset = 1;
  } else {
    c.seconds_[0] = true;
  }
  std::array<std::vector<bool>, 5> v;
  for (std::size_t i = 0; i < 5; ++i) v[i] = parse_field(fields[i + offset], kFields[i], i + offset);
  c.minutes_ = to_bitset<60>(v[0]);
  c.hours_ = to_bitset<24>(v[1]);
  c.days_of_month_ = to_bitset<32>(v[2]);
  c.months_ = to_bitset<13>(v[3]);
  std::vector<bool>& dow = v[4];
  if (dow[7]) dow[0] = true;  // 7 is Sunday too
  c.days_of_week_ = to_bitset<7>(dow);
  c.dom_restricted_ = fields[2 + offset][0] != '*';
  c.dow_restricted_ = fields[4 + offset][0] != '*';
  return c;
}

namespace {

bool day_matches(const std::bitset<32>& dom, const std::bitset<7>& dow, bool dom_restricted,
                 bool dow_restricted, const year_month_day& ymd) {
  const bool by_dom = dom[static_cast<unsigned>(ymd.day())];
  const bool by_dow = dow[weekday(sys_days(ymd)).c_encoding()];
  if (dom_restricted && dow_restricted) return by_dom || by_dow;
  return by_dom && by_dow;
}

}  // namespace

bool Cron::matches(sys_seconds t) const {
  const sys_days day = floor<days>(t);
  const year_month_day ymd(day);
  const hh_mm_ss<seconds> tod(t - day);
  return months_[static_cast<unsigned>(ymd.month())] &&
         day_matches(days_of_month_, days_of_week_, dom_restricted_, dow_restricted_, ymd) &&
         hours_[static_cast<std::size_t>(tod.hours().count())] &&
         minutes_[static_cast<std::size_t>(tod.minutes().count())] &&
         seconds_[static_cast<std::size_t>(tod.seconds().count())];
}

sys_seconds Cron::next_after(sys_seconds after) const {
  sys_seconds t = after + seconds(1);
  const sys_seconds give_up = after + days(366 * 8);
  // Each step skips the whole unit that cannot match (month, day, hour, minute),
  // so a search visits at most a few thousand candidates.
  while (t <= give_up) {
    const sys_days day = floor<days>(t);
    const year_month_day ymd(day);
    if (!months_[static_cast<unsigned>(ymd.month())]) {
      const year_month next = ymd.year() / ymd.month() + months(1);
      t = sys_days(next / 1);
      continue;
    }
    if (!day_matches(days_of_month_, days_of_week_, dom_restricted_, dow_restricted_, ymd)) {
      t = day + days(1);
      continue;
    }
    const hh_mm_ss<seconds> tod(t - day);
    if (!hours_[static_cast<std::size_t>(tod.hours().count())]) {
      t = day + tod.hours() + hours(1);
      continue;
    }
    if (!minutes_[static_cast<std::size_t>(tod.minutes().count())]) {
      t = day + tod.hours() + tod.minutes() + minutes(1);
      continue;
    }
    if (!seconds_[static_cast<std::size_t>(tod.seconds().count())]) {
      t += seconds(1);
      continue;
    }
    return t;
  }
  throw std::runtime_error("cron " + quote(text_) + " has no tick within eight years");
}

}  // namespace jobhost
