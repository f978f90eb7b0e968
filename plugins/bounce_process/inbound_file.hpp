// inbound_file.hpp: where bounce.process may read (a payload's path, confined
// under settings.inbound_root) and how much of it (settings.max_message_bytes).
// Pure file-system logic, unit-tested without a database.
#pragma once

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace bounce {

// A path or file no attempt will get past: the job fails for good.
struct Refused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The real path of payload.path under root (itself canonical), or nullopt
// when nothing is there. Refused: an absolute path, a ".." component, a NUL, a
// symlink (at any depth) that leads outside root, or not a regular file.
std::optional<std::filesystem::path> confined_path(const std::filesystem::path& root,
                                                   std::string_view relative);

// The whole file when it is at most max_bytes, read in chunks so a file that
// grows while read stops at the cap too. Refused beyond it, never loaded.
std::string read_capped(const std::filesystem::path& file, size_t max_bytes);

}  // namespace bounce
