// outcome_writer.hpp: group commit of the messages' outcomes. Workers hand
// in what a relay did with their message and wait; one writer thread writes
// every outcome handed in meanwhile with one statement (the status updates
// and their email_events rows), so N workers finishing together cost one
// round trip, not N. A worker returns only once its outcome is committed:
// a job is never acknowledged before its message's row says what happened.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <jobhost_plugins/pg_array.hpp>
#include <jobhost_plugins/pg_pool.hpp>

namespace email_send {

struct OutcomeRow {
  std::string tenant;
  long long row = 0;              // app.email_messages.id
  std::string status;             // sending (unknown), sent, failed
  std::string provider, error;    // '' for none
  std::string event;              // the email_events row's event, '' for none
  std::optional<std::string> campaign;
  std::string recipient;
  std::string detail = "{}";      // the event's detail, JSON
};

// Every row's status and its event, tenant-scoped row by row.
constexpr const char* kWriteOutcomes = R"sql(
WITH o AS (
  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::jsonb[])
    AS o(tenant_id, id, status, provider, error, event, campaign_id, recipient, detail)),
u AS (
  UPDATE app.email_messages m
     SET status = o.status, provider = nullif(o.provider, ''), error = nullif(o.error, ''),
         sent_at = CASE WHEN o.status = 'sent' THEN now() END
    FROM o WHERE m.tenant_id = o.tenant_id AND m.id = o.id
  RETURNING m.id)
INSERT INTO app.email_events (tenant_id, message_id, campaign_id, recipient, event, detail)
SELECT o.tenant_id, o.id, nullif(o.campaign_id, ''), o.recipient, o.event, o.detail FROM o JOIN u ON u.id = o.id
 WHERE o.event <> '')sql";

class OutcomeWriter {
 public:
  // max_batch: outcomes per statement at most.
  OutcomeWriter(jobhost_plugins::PgPool& pool, size_t max_batch = 512)
      : pool_(pool), max_batch_(max_batch), thread_([this](std::stop_token st) { run(st); }) {}
  ~OutcomeWriter() {
    std::lock_guard lock(mu_);
    thread_.request_stop();
    wake_.notify_all();
  }
  OutcomeWriter(const OutcomeWriter&) = delete;
  OutcomeWriter& operator=(const OutcomeWriter&) = delete;

  // Blocks until the row is committed; throws std::runtime_error (saying why)
  // when it could not be written in about 3.5 s of retries.
  void write(OutcomeRow row) {
    auto ticket = std::make_shared<Ticket>();
    ticket->row = std::move(row);
    std::unique_lock lock(mu_);
    queue_.push_back(ticket);
    wake_.notify_one();
    done_.wait(lock, [&] { return ticket->finished; });
    if (!ticket->error.empty()) throw std::runtime_error(ticket->error);
  }

  // Statements written so far, and rows in them: the benchmark's and tests' view.
  long long statements() const {
    std::lock_guard lock(mu_);
    return statements_;
  }

 private:
  struct Ticket {
    OutcomeRow row;
    bool finished = false;
    std::string error;
  };

  void run(std::stop_token st) {
    for (;;) {
      std::vector<std::shared_ptr<Ticket>> batch;
      {
        std::unique_lock lock(mu_);
        wake_.wait(lock, [&] { return !queue_.empty() || st.stop_requested(); });
        if (queue_.empty()) return;
        while (!queue_.empty() && batch.size() < max_batch_) {
          batch.push_back(queue_.front());
          queue_.pop_front();
        }
      }
      const std::string error = flush(batch);
      std::lock_guard lock(mu_);
      ++statements_;
      for (auto& t : batch) {
        t->error = error;
        t->finished = true;
      }
      done_.notify_all();
    }
  }

  // The batch in one statement, tried four times over about 3.5 s.
  std::string flush(const std::vector<std::shared_ptr<Ticket>>& batch) {
    using jobhost_plugins::pg_array;
    std::vector<std::string> cols[9];
    for (const auto& t : batch) {
      const OutcomeRow& r = t->row;
      cols[0].push_back(r.tenant);
      cols[1].push_back(std::to_string(r.row));
      cols[2].push_back(r.status);
      cols[3].push_back(r.provider);
      cols[4].push_back(r.error);
      cols[5].push_back(r.event);
      cols[6].push_back(r.campaign.value_or(""));
      cols[7].push_back(r.recipient);
      cols[8].push_back(r.detail);
    }
    // '' stands for no campaign: campaign ids are never empty (CHECK id <> '').
    std::string last;
    for (int attempt = 1; attempt <= 4; ++attempt) {
      try {
        auto conn = pool_.acquire();
        pqxx::nontransaction tx(*conn);
        tx.exec_params(kWriteOutcomes, pg_array(cols[0]), pg_array(cols[1]), pg_array(cols[2]), pg_array(cols[3]), pg_array(cols[4]),
                       pg_array(cols[5]), pg_array(cols[6]), pg_array(cols[7]), pg_array(cols[8]));
        return {};
      } catch (const std::exception& e) {
        last = e.what();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250 * attempt * attempt));
    }
    return last;
  }

  jobhost_plugins::PgPool& pool_;
  const size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable wake_, done_;
  std::deque<std::shared_ptr<Ticket>> queue_;
  long long statements_ = 0;
  std::jthread thread_;  // last: started once everything above exists
};

}  // namespace email_send
