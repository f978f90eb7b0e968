// inbound_file.cpp: see inbound_file.hpp.
#include "inbound_file.hpp"

#include <algorithm>
#include <fstream>
#include <vector>

namespace bounce {

namespace fs = std::filesystem;

std::optional<fs::path> confined_path(const fs::path& root, std::string_view relative) {
  const std::string shown(relative.substr(0, 300));
  if (relative.empty()) throw Refused("payload.path: must not be empty");
  if (relative.find('\0') != std::string_view::npos) throw Refused("payload.path: contains a NUL byte");
  const fs::path rel(relative);
  if (rel.is_absolute() || relative.front() == '/') {
    throw Refused("payload.path: '" + shown + "' is absolute; give it relative to settings.inbound_root");
  }
  for (const fs::path& part : rel) {
    if (part == "..") throw Refused("payload.path: '" + shown + "' has a '..' component");
  }
  const fs::path joined = root / rel;
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(joined, ec);
  if (ec || !fs::exists(st)) return std::nullopt;
  // canonical() resolves every symlink, so a link inside the root cannot lead
  // outside it.
  const fs::path real = fs::canonical(joined, ec);
  if (ec) throw Refused("payload.path: '" + shown + "' cannot be resolved: " + ec.message());
  const auto [end, _] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
  if (end != root.end()) {
    throw Refused("payload.path: '" + shown + "' leads outside settings.inbound_root (a symlink?)");
  }
  if (!fs::is_regular_file(real, ec)) throw Refused("payload.path: '" + shown + "' is not a regular file");
  return real;
}

std::string read_capped(const fs::path& file, size_t max_bytes) {
  const auto too_big = [&](const std::string& size) {
    return Refused("the message is " + size + " bytes, more than settings.max_message_bytes (" +
                   std::to_string(max_bytes) + "): not read");
  };
  std::error_code ec;
  if (const auto size = fs::file_size(file, ec); !ec && size > max_bytes) throw too_big(std::to_string(size));
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + file.filename().string());
  std::string out;
  std::vector<char> buffer(1 << 16);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
    out.append(buffer.data(), static_cast<size_t>(in.gcount()));
    if (out.size() > max_bytes) throw too_big("over " + std::to_string(max_bytes));
  }
  if (in.bad()) throw std::runtime_error("read error on " + file.filename().string());
  return out;
}

}  // namespace bounce
