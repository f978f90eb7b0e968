// jobhost_plugins/email_address.hpp: the one rule for what counts as an email
// address, shared by email.send (recipients) and import.contacts (CSV rows).
//
// Deliberately the practical subset mail relays accept, not all of RFC 5322:
// local@domain, local part of atext characters and dots (no leading, trailing or
// double dot), domain of at least two dot-separated labels of letters, digits
// and hyphens (no label starting or ending with a hyphen), 254 bytes at most.
#pragma once

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>

namespace jobhost_plugins {

// Lower-cased, surrounding blanks removed: the form stored in app.contacts and
// app.suppressions, so one address is one row.
inline std::string normalize_email(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Why s is not an acceptable address, or nullopt when it is.
inline std::optional<std::string> email_problem(std::string_view s) {
  if (s.empty()) return "is empty";
  if (s.size() > 254) return "is longer than 254 characters";
  const auto at = s.rfind('@');
  if (at == std::string_view::npos) return "has no @";
  const std::string_view local = s.substr(0, at), domain = s.substr(at + 1);
  if (local.empty()) return "has nothing before the @";
  if (local.size() > 64) return "has a local part longer than 64 characters";
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) {
    return "has a misplaced dot before the @";
  }
  static constexpr std::string_view atext = "!#$%&'*+-/=?^_`{|}~.";
  for (const char c : local) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && atext.find(c) == std::string_view::npos) {
      return std::string("has the character '") + c + "' before the @";
    }
  }
  if (domain.empty()) return "has no domain after the @";
  if (domain.find('.') == std::string_view::npos) return "has a domain without a dot";
  size_t start = 0;
  while (start <= domain.size()) {
    const size_t dot = std::min(domain.find('.', start), domain.size());
    const std::string_view label = domain.substr(start, dot - start);
    if (label.empty()) return "has an empty label in its domain";
    if (label.size() > 63) return "has a domain label longer than 63 characters";
    if (label.front() == '-' || label.back() == '-') return "has a domain label starting or ending with '-'";
    for (const char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return std::string("has the character '") + c + "' in its domain";
      }
    }
    start = dot + 1;
  }
  return std::nullopt;
}

}  // namespace jobhost_plugins
