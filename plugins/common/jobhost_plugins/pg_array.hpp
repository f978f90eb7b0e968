// jobhost_plugins/pg_array.hpp: a PostgreSQL array literal ('{"a","b"}') of
// texts, to pass a whole batch as one statement parameter ($1::text[],
// $1::jsonb[], $1::bigint[] ...) and unnest it server-side: one round trip per
// batch instead of one per row.
#pragma once

#include <string>
#include <vector>

namespace jobhost_plugins {

// Every element is quoted, so commas, braces, blanks and the word NULL stay
// text; a quote or backslash inside is escaped. There is no NULL element.
inline std::string pg_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    out += i ? ",\"" : "\"";
    for (const char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

}  // namespace jobhost_plugins
