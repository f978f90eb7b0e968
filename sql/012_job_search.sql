-- 012_job_search: finding any job among millions (the dashboard's search,
-- GET /api/v1/jobs), newest first, a page at a time (keyset on id: job ids
-- are time-ordered, 003_time_ordered_ids.sql).
--
-- A search runs one index range per state it looks at (host/job_search.cpp):
-- by state alone on jobs_search_status_idx, by type (and state) on
-- jobs_search_type_idx, each read backwards from the cursor for one page, so
-- a page costs a few index pages whatever the table's size. Every state
-- change writes an entry in each (status is in both), so there are two and
-- no more. On a large jobs table, build them first with CREATE INDEX
-- CONCURRENTLY under these names: the migration then leaves them be instead
-- of locking the table for the build.
--
-- Only finished jobs are in them: a job gets its entries once, when it
-- finishes, instead of one per state change on the hot path (measured with
-- both indexes over every state: the no-op drain fell from about 12,800 to
-- 7,700 jobs/s on a 2-core machine). The live states, of which there are far
-- fewer rows, are found through their own partial indexes and the primary key.
CREATE INDEX IF NOT EXISTS jobs_search_status_idx ON jobhost.jobs (status, id)
    WHERE status IN ('completed', 'failed', 'cancelled');
CREATE INDEX IF NOT EXISTS jobs_search_type_idx ON jobhost.jobs (queue_name, status, id)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- The smallest time-ordered id of a moment: the 48-bit millisecond prefix,
-- the rest zero. Turns since/until into a range of ids, so a time window is
-- part of the same index range. (Ids made before 003 are random: a time
-- window does not find them; the retention sweeps removed them long ago.)
CREATE FUNCTION jobhost.job_id_floor(at timestamptz) RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                || '\x00000000000000000000'::bytea, 'hex')::uuid
$$;
