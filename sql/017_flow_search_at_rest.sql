-- 017_flow_search_at_rest: the flow-key search index leaves out the two
-- states a job passes through on the hot path. 013's index held every keyed
-- job in every state, so each claim (to migrated_to_redis) and each lease (to
-- running) wrote an entry in it: two of the four index writes a keyed job paid
-- beyond a plain one (measured: 10,000-key drain at 0.76 of the plain drain
-- with it, see the README's flow control figures). A job still gets entries
-- when enqueued, when it finishes, and when it waits for a retry.
--
-- Jobs in flight are found through their own partial indexes
-- (jobs_migrated_idx, jobs_lease_idx), whose rows are bounded by the Redis
-- window and the running workers. Build it first with CREATE INDEX
-- CONCURRENTLY under this name on a large jobs table.
CREATE INDEX IF NOT EXISTS jobs_flow_key_at_rest_idx ON jobhost.jobs (flow_key, id)
    WHERE flow_key IS NOT NULL AND status IN ('queued', 'retry_scheduled', 'completed', 'failed', 'cancelled');
DROP INDEX IF EXISTS jobhost.jobs_flow_key_idx;
