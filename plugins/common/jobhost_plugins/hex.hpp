// jobhost_plugins/hex.hpp: bytes as lower-case hexadecimal, the form digests
// and signatures take in the plugins' outputs (export checksums, webhook
// signatures).
#pragma once

#include <cstddef>
#include <string>

namespace jobhost_plugins {

inline std::string hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0xf];
  }
  return out;
}

}  // namespace jobhost_plugins
