// smtp_pool.cpp: the session pool (see smtp_pool.hpp). Sessions are opened
// and closed outside the lock: a slot is reserved first, so the bound holds
// while a connection is being made.
#include "smtp_pool.hpp"

#include <stdexcept>

namespace smtp_client {

SessionPool::~SessionPool() {
  std::lock_guard lock(mu_);
  for (auto& s : idle_) s->quit();
}

SessionPool::Lease& SessionPool::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = o.pool_;
    session_ = std::move(o.session_);
    reusable_ = o.reusable_;
    o.pool_ = nullptr;
  }
  return *this;
}

void SessionPool::Lease::release() {
  if (pool_ != nullptr && session_ != nullptr) pool_->give_back(std::move(session_), reusable_);
  pool_ = nullptr;
}

SessionPool::Lease SessionPool::checkout(bool fresh) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(endpoint_.timeout_ms);
  std::vector<std::unique_ptr<Session>> discard;
  std::unique_ptr<Session> found;
  {
    std::unique_lock lock(mu_);
    for (;;) {
      while (!fresh && !idle_.empty() && !found) {
        std::unique_ptr<Session> s = std::move(idle_.back());
        idle_.pop_back();
        const bool young = Clock::now() - s->last_used() < std::chrono::milliseconds(limits_.max_idle_ms);
        if (young && s->idle_ok()) {
          found = std::move(s);
        } else {
          --open_;
          discard.push_back(std::move(s));
        }
      }
      if (found) break;
      if (fresh && !idle_.empty() && open_ >= limits_.max_sessions) {
        // A stale session suggests its idle siblings are as old: close one to make room.
        --open_;
        discard.push_back(std::move(idle_.front()));
        idle_.erase(idle_.begin());
      }
      if (open_ < limits_.max_sessions) {
        ++open_;
        break;
      }
      if (freed_.wait_until(lock, deadline) == std::cv_status::timeout && open_ >= limits_.max_sessions && idle_.empty()) {
        lock.unlock();
        for (auto& s : discard) s->quit();
        throw std::runtime_error("all " + std::to_string(limits_.max_sessions) + " sessions busy for " +
                                 std::to_string(endpoint_.timeout_ms) + " ms");
      }
    }
  }
  for (auto& s : discard) s->quit();
  if (!discard.empty()) freed_.notify_all();
  if (found) return Lease(this, std::move(found));
  try {
    std::unique_ptr<Session> s = Session::open(endpoint_);
    std::lock_guard lock(mu_);
    ++opened_;
    return Lease(this, std::move(s));
  } catch (...) {
    {
      std::lock_guard lock(mu_);
      --open_;
    }
    freed_.notify_one();
    throw;
  }
}

void SessionPool::give_back(std::unique_ptr<Session> s, bool reusable) {
  if (reusable && s->messages() < limits_.max_messages) {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(s));
  } else {
    s->quit();
    s.reset();
    std::lock_guard lock(mu_);
    --open_;
  }
  freed_.notify_one();
}

void SessionPool::sweep() {
  std::vector<std::unique_ptr<Session>> old;
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    for (auto it = idle_.begin(); it != idle_.end();) {
      if (now - (*it)->last_used() >= std::chrono::milliseconds(limits_.max_idle_ms) || !(*it)->idle_ok()) {
        old.push_back(std::move(*it));
        it = idle_.erase(it);
        --open_;
      } else {
        ++it;
      }
    }
  }
  for (auto& s : old) s->quit();
  if (!old.empty()) freed_.notify_all();
}

long SessionPool::opened() const {
  std::lock_guard lock(mu_);
  return opened_;
}

}  // namespace smtp_client
