-- The migrator claims ready jobs by priority band, high before normal before
-- low, oldest run_at first within a band. Redis holds only a bounded window of
-- each queue (host.migrator.max_in_redis), so under a backlog the order of
-- claims is the order of work: a high-priority job enqueued behind a million
-- normal ones is the next one claimed.
--
-- The bands are those of the Redis lists; host/routing.hpp must agree (a test
-- compares them).
CREATE FUNCTION jobhost.priority_band(priority integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE WHEN priority <= 50 THEN 0 WHEN priority <= 150 THEN 1 ELSE 2 END)::smallint
$$;

-- Replaces jobs_ready_idx: each band of a queue is one range scan, and the
-- earliest run_at of a queue is three index probes.
CREATE INDEX jobs_ready_band_idx
    ON jobhost.jobs (queue_name, jobhost.priority_band(priority), run_at)
    WHERE status IN ('queued', 'retry_scheduled');
DROP INDEX jobhost.jobs_ready_idx;
