-- bench/search_10m.sql: 10 million jobs over 30 days in a scratch database
-- migrated by `jobctl db migrate`, for the plans and timings of the job
-- search (README, "Finding any job"). Run with psql -v ON_ERROR_STOP=1 -f.
-- The indexes are dropped while the rows go in and built again after, as a
-- restore would; triggers are off (no NOTIFY, queues registered once).
\timing on
SET maintenance_work_mem = '512MB';
SET synchronous_commit = off;
CREATE TEMP TABLE saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
   WHERE schemaname = 'jobhost' AND tablename = 'jobs' AND indexname <> 'jobs_pkey';
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexname FROM saved_indexes LOOP EXECUTE format('DROP INDEX jobhost.%I', r.indexname); END LOOP;
END $$;
ALTER TABLE jobhost.jobs DISABLE TRIGGER USER;
INSERT INTO jobhost.job_queues (name)
  SELECT unnest(ARRAY['email.send', 'campaign.process', 'import.contacts', 'export.data',
                      'webhook.dispatch', 'maintenance.cleanup', 'email.bounce', 'noop'])
  ON CONFLICT DO NOTHING;
-- i-th job: created i * 0.26 s after 30 days ago; a time-ordered id from that
-- moment; 94 % completed, 3 % failed, 2 % cancelled, 1 % still waiting.
INSERT INTO jobhost.jobs (id, queue_name, status, priority, payload, attempt_count, max_attempts,
                          run_at, created_at, updated_at, started_at, completed_at, failed_at, last_error_message)
SELECT encode(substring(int8send((extract(epoch FROM t) * 1000)::bigint) FROM 3)
              || substring(uuid_send(gen_random_uuid()) FROM 7), 'hex')::uuid,
       (ARRAY['email.send', 'email.send', 'email.send', 'email.send', 'campaign.process', 'import.contacts',
              'export.data', 'webhook.dispatch', 'webhook.dispatch', 'email.bounce'])[1 + i % 10],
       s, 100, jsonb_build_object('to', 'user' || i || '@example.com'),
       CASE WHEN s = 'queued' THEN 0 ELSE 1 END, 3, t, t, t,
       CASE WHEN s <> 'queued' THEN t END,
       CASE WHEN s = 'completed' THEN t + interval '80 ms' END,
       CASE WHEN s = 'failed' THEN t + interval '80 ms' END,
       CASE WHEN s = 'failed' THEN 'smtp 550: mailbox unavailable' END
  FROM (SELECT i, now() - interval '30 days' + i * interval '260 ms' AS t,
               CASE WHEN i % 100 < 94 THEN 'completed' WHEN i % 100 < 97 THEN 'failed'
                    WHEN i % 100 < 99 THEN 'cancelled' ELSE 'queued' END AS s
          FROM generate_series(1, 10000000) AS i) g;
ALTER TABLE jobhost.jobs ENABLE TRIGGER USER;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexdef FROM saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
END $$;
VACUUM ANALYZE jobhost.jobs;
SELECT count(*) AS jobs, pg_size_pretty(pg_total_relation_size('jobhost.jobs')) AS size FROM jobhost.jobs;
