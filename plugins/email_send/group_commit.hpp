// group_commit.hpp: many workers' requests, one statement. A worker submits
// its request and waits; one thread takes every request waiting meanwhile (up
// to max_batch, and never two with the same key in one batch), runs them with
// one call of `run`, and hands each worker its own result. N workers arriving
// together cost one database round trip and one commit, not N; a worker
// alone waits for no one (there is no timer).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace email_send {

template <typename Request, typename Response>
class GroupCommit {
 public:
  // run: the requests of one batch -> one response each, in order; throwing
  // fails every request of the batch with its message. key: requests with the
  // same key go in different batches (empty: no such rule).
  using Run = std::function<std::vector<Response>(const std::vector<Request>&)>;
  using Key = std::function<std::string(const Request&)>;

  GroupCommit(Run run, size_t max_batch, Key key = {})
      : run_(std::move(run)), key_(std::move(key)), max_batch_(max_batch),
        thread_([this](std::stop_token st) { loop(st); }) {}
  ~GroupCommit() {
    {
      std::lock_guard lock(mu_);
      thread_.request_stop();
    }
    wake_.notify_all();
  }
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Blocks until the request's batch ran; throws std::runtime_error when it failed.
  Response submit(Request r) {
    auto t = std::make_shared<Ticket>();
    t->request = std::move(r);
    std::unique_lock lock(mu_);
    queue_.push_back(t);
    wake_.notify_one();
    // Each ticket has its own condition variable: a batch wakes its own
    // requesters only, not every worker waiting. (Not a semaphore: libstdc++'s
    // spins on sched_yield before it sleeps, which cost more than the wait.)
    t->done.wait(lock, [&] { return t->finished; });
    if (!t->error.empty()) throw std::runtime_error(t->error);
    return std::move(t->response);
  }

  // Batches run so far (each one statement).
  long long batches() const {
    std::lock_guard lock(mu_);
    return batches_;
  }

 private:
  struct Ticket {
    Request request;
    Response response{};
    std::string error;
    bool finished = false;
    std::condition_variable done;
  };

  void loop(std::stop_token st) {
    for (;;) {
      std::vector<std::shared_ptr<Ticket>> batch;
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [&] { return !queue_.empty() || st.stop_requested(); });
        if (queue_.empty()) return;
        std::set<std::string> keys;
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() < max_batch_;) {
          if (key_ && !keys.insert(key_((*it)->request)).second) {
            ++it;  // the same key as one in this batch: the next batch takes it
            continue;
          }
          batch.push_back(*it);
          it = queue_.erase(it);
        }
      }
      std::vector<Request> requests;
      requests.reserve(batch.size());
      for (const auto& t : batch) requests.push_back(t->request);
      std::vector<Response> responses;
      std::string error;
      try {
        responses = run_(requests);
        if (responses.size() != batch.size()) error = "internal: a batch of " + std::to_string(batch.size()) +
                                                      " requests got " + std::to_string(responses.size()) + " responses";
      } catch (const std::exception& e) {
        error = e.what();
      }
      {
        std::lock_guard lock(mu_);
        ++batches_;
        for (size_t i = 0; i < batch.size(); ++i) {
          if (error.empty()) batch[i]->response = std::move(responses[i]);
          batch[i]->error = error;
          batch[i]->finished = true;
        }
      }
      // Woken after the lock is released: a worker woken while it was held
      // would only sleep again on the mutex (two more context switches each).
      // `batch` keeps every ticket, and with it its condition variable, alive.
      for (const auto& t : batch) t->done.notify_one();
    }
  }

  const Run run_;
  const Key key_;
  const size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Ticket>> queue_;
  long long batches_ = 0;
  std::jthread thread_;  // last: started once everything above exists
};

}  // namespace email_send
