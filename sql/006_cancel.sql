-- 006_cancel: job cancellation, and what the admin API's rates read.
--
-- A queued job is cancelled at once (status 'cancelled'). A running one gets
-- cancel_requested_at: the host that holds its lease sees it at its next
-- heartbeat and flags the attempt, and whatever the attempt returns except
-- success is written as 'cancelled' (a lease that expires meanwhile too).
ALTER TABLE jobhost.jobs ADD COLUMN cancel_requested_at timestamptz;

-- job_logs only grows, in created_at order: a BRIN index is a few pages and
-- lets "what finished in the last minute" and retention deletes read only the
-- recent or old end of the table.
CREATE INDEX job_logs_created_brin ON jobhost.job_logs USING brin (created_at);
