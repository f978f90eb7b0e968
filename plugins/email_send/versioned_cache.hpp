// versioned_cache.hpp: values kept per (tenant, id) with the version (the
// row's updated_at) they were read at. The caller learns the row's current
// version in a statement it runs anyway (the message claim) and asks for
// that version: a changed row is a miss, so an edit takes effect with the
// next message. Bounded: past max_entries everything is dropped (a campaign
// uses one template; thousands at once are a test, not a workload).
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace email_send {

template <typename V>
class VersionedCache {
 public:
  explicit VersionedCache(size_t max_entries = 4096) : max_(max_entries) {}

  // The value and its version, whatever the version (nullptr when absent).
  std::pair<std::shared_ptr<const V>, std::string> any(const std::string& tenant, const std::string& id) const {
    std::lock_guard lock(mu_);
    const auto it = map_.find({tenant, id});
    if (it == map_.end()) return {nullptr, {}};
    return {it->second.value, it->second.version};
  }

  // The value read at this version, or nullptr.
  std::shared_ptr<const V> at(const std::string& tenant, const std::string& id, const std::string& version) const {
    std::lock_guard lock(mu_);
    const auto it = map_.find({tenant, id});
    return it != map_.end() && it->second.version == version ? it->second.value : nullptr;
  }

  void put(const std::string& tenant, const std::string& id, const std::string& version, std::shared_ptr<const V> v) {
    std::lock_guard lock(mu_);
    if (map_.size() >= max_) map_.clear();
    map_[{tenant, id}] = Entry{version, std::move(v)};
  }

  void erase(const std::string& tenant, const std::string& id) {
    std::lock_guard lock(mu_);
    map_.erase({tenant, id});
  }

 private:
  struct Entry {
    std::string version;
    std::shared_ptr<const V> value;
  };
  const size_t max_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, Entry> map_;
};

}  // namespace email_send
