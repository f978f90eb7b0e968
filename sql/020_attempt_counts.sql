-- 020_attempt_counts: attempts per minute, queue and outcome, kept as they
-- are logged, for the reads an operator's screen repeats.
--
-- The dashboard polls the queue overview (its last-minute counts) and the
-- throughput chart every 2 s, and the metrics gauges read the overview too.
-- Both counted job_logs rows: the overview joined every row of the last
-- minute with jobhost.jobs for its queue (720 ms at 1,000,000 rows, one
-- minute of a 17,000 jobs/s drain), the chart read every row of its window
-- (about 1 µs a row: 14 s for 15 minutes of that drain). Now each statement
-- that writes job_logs rows also adds them here, one row per minute, queue,
-- status and shard it touched, and both reads sum a few hundred rows.
--
-- shard: jobhost.batch_shard() (the writer's backend, 16 ways), as for
-- batch_counts, so that two hosts' completers rarely wait on one row.
-- Deleting job_logs rows (retention, a deleted job) leaves the counts: they
-- say what happened in a minute. maintenance_cleanup deletes rows older than
-- retention.job_logs_days.
CREATE TABLE jobhost.attempt_counts (
    minute     timestamptz NOT NULL,
    queue_name text NOT NULL,
    status     text NOT NULL,
    shard      smallint NOT NULL,
    n          bigint NOT NULL,
    PRIMARY KEY (minute, queue_name, status, shard)
);

-- A statement-level trigger, so every writer of job_logs counts (the
-- completer, the reaper, an operator's INSERT), once per statement: the
-- completer's batch of several hundred outcomes is one upsert of a few rows.
-- The job's queue comes from jobhost.jobs, whose rows the same statement
-- has just updated. The rows are upserted in key order, so two statements
-- that share rows lock them in the same order and cannot deadlock.
CREATE FUNCTION jobhost.count_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO jobhost.attempt_counts AS c (minute, queue_name, status, shard, n)
  SELECT date_trunc('minute', l.created_at), j.queue_name, l.status, jobhost.batch_shard(), count(*)
    FROM new_logs l JOIN jobhost.jobs j ON j.id = l.job_id
   GROUP BY 1, 2, 3
   ORDER BY 1, 2, 3
  ON CONFLICT (minute, queue_name, status, shard) DO UPDATE SET n = c.n + excluded.n;
  RETURN NULL;
END $$;

CREATE TRIGGER job_logs_count_attempts AFTER INSERT ON jobhost.job_logs
  REFERENCING NEW TABLE AS new_logs
  FOR EACH STATEMENT EXECUTE FUNCTION jobhost.count_attempts();

-- The last hour as it was logged before this migration (the trigger's lock
-- on job_logs holds new rows back until it commits, so none is counted
-- twice). Older minutes of the chart start at zero.
INSERT INTO jobhost.attempt_counts (minute, queue_name, status, shard, n)
SELECT date_trunc('minute', l.created_at), j.queue_name, l.status, 0, count(*)
  FROM jobhost.job_logs l JOIN jobhost.jobs j ON j.id = l.job_id
 WHERE l.created_at >= date_trunc('minute', now()) - interval '60 minutes'
 GROUP BY 1, 2, 3;

-- The dashboard's recent failures: the newest job_logs rows that are not
-- completions. Walking the primary key backwards skipped every completion
-- on the way (all of them, when nothing failed); this index holds only the
-- others, so a completion's insert adds no entry to it.
CREATE INDEX job_logs_not_completed_idx ON jobhost.job_logs (id) WHERE status <> 'completed';
