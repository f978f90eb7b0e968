-- 014_batches: knowing when a fan-out is done (DESIGN §10).
--
--   SELECT jobhost.batch_open(callback_type => 'campaign.finish',
--                             callback_payload => '{"campaign_id": "c1"}', description => 'Launch');
--   SELECT jobhost.enqueue('email.send', '{...}', batch_id => '<batch id>');   -- enqueue_many too
--   SELECT jobhost.batch_close('<batch id>');   -- no more jobs will be added
--
-- A batch is open (jobs may be added), closed (no more jobs; waiting for its
-- members), finished (no member in a live state; the callback job has been
-- enqueued) or cancelled (jobhost.batch_cancel; no callback). A DLQ replay of
-- a member of a finished batch reopens it (closed again): when that member
-- ends, the batch finishes a second time and a second callback job is
-- enqueued with the new counts (batch.finishes says which time it is).
CREATE TABLE jobhost.batches (
    id               uuid PRIMARY KEY DEFAULT jobhost.new_job_id(),
    state            text NOT NULL DEFAULT 'open'
                     CONSTRAINT batches_state_valid CHECK (state IN ('open', 'closed', 'finished', 'cancelled')),
    description      text NOT NULL DEFAULT '',
    -- NULL: no callback, the batch only counts.
    callback_type    text CHECK (callback_type <> ''),
    callback_payload jsonb NOT NULL DEFAULT '{}'
                     CONSTRAINT batches_callback_payload_is_object CHECK (jsonb_typeof(callback_payload) = 'object'),
    callback_priority integer NOT NULL DEFAULT 100,
    -- The last callback job enqueued, and how many times the batch finished.
    callback_job_id  uuid,
    finishes         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    closed_at        timestamptz,
    finished_at      timestamptz,
    cancelled_at     timestamptz
);
-- The finishing sweep and the dashboard read the batches not yet done.
CREATE INDEX batches_unfinished_idx ON jobhost.batches (state, created_at) WHERE state IN ('open', 'closed');

-- A batch's counts, spread over up to 16 rows ("shards", one per server
-- process modulo 16) so that producers and completers on different
-- connections never wait on one another's row; a batch's count is the sum of
-- its rows. total counts the jobs added; the others the members that reached
-- each terminal state (a replayed member is taken off again).
CREATE TABLE jobhost.batch_counts (
    batch_id  uuid NOT NULL REFERENCES jobhost.batches (id) ON DELETE CASCADE,
    shard     smallint NOT NULL,
    total     bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, shard)
);

CREATE FUNCTION jobhost.batch_shard() RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT (pg_backend_pid() % 16)::smallint $$;

-- No foreign key: checking one per inserted row would cost the bulk enqueue
-- a lookup (and a lock) per job; jobhost.enqueue and enqueue_many check the
-- batch once per call instead.
ALTER TABLE jobhost.jobs ADD COLUMN batch_id uuid;

-- A batch's members waiting in PostgreSQL. With the migrated and running
-- jobs (few: at most max_in_redis and the workers, each in a partial index
-- of its own) they are its unfinished members: whether a batch is done is
-- three probes. Only the waiting states, so a member gets an entry when it is
-- enqueued (and when it is retried), not at every state change of the hot
-- path; jobs of no batch are not in it.
CREATE INDEX jobs_batch_ready_idx ON jobhost.jobs (batch_id)
    WHERE batch_id IS NOT NULL AND status IN ('queued', 'retry_scheduled');

-- Opens a batch and returns its id. callback_type NULL: no callback.
CREATE FUNCTION jobhost.batch_open(
    callback_type     text DEFAULT NULL,
    callback_payload  jsonb DEFAULT '{}',
    description       text DEFAULT '',
    callback_priority integer DEFAULT 100
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
BEGIN
    IF batch_open.callback_type = '' THEN
        RAISE EXCEPTION 'jobhost.batch_open: callback_type must be a job type or NULL (no callback), got an empty text'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_open.callback_payload IS NULL OR jsonb_typeof(batch_open.callback_payload) <> 'object' THEN
        RAISE EXCEPTION 'jobhost.batch_open: callback_payload must be a JSON object, got %',
            coalesce(jsonb_typeof(batch_open.callback_payload), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO jobhost.batches (callback_type, callback_payload, description, callback_priority)
    VALUES (batch_open.callback_type, batch_open.callback_payload, coalesce(batch_open.description, ''),
            coalesce(batch_open.callback_priority, 100))
    RETURNING id INTO new_id;
    RETURN new_id;
END $$;

-- Adds to one batch's counts, in the calling connection's row.
CREATE FUNCTION jobhost.batch_add(batch uuid, total bigint, completed bigint DEFAULT 0,
                                  failed bigint DEFAULT 0, cancelled bigint DEFAULT 0) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO jobhost.batch_counts AS c (batch_id, shard, total, completed, failed, cancelled)
  VALUES (batch, jobhost.batch_shard(), total, completed, failed, cancelled)
  ON CONFLICT (batch_id, shard) DO UPDATE
     SET total = c.total + excluded.total, completed = c.completed + excluded.completed,
         failed = c.failed + excluded.failed, cancelled = c.cancelled + excluded.cancelled
$$;

-- The batch jobs may be added to; an error naming the batch otherwise
-- (SQLSTATE P0002 when there is none, 55000 when it is not open). Holds
-- a share lock on its row until the caller commits, so jobhost.batch_close
-- waits for the jobs being added and counts every one of them.
CREATE FUNCTION jobhost.batch_for_enqueue(fn text, batch uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    SELECT b.state INTO st FROM jobhost.batches b WHERE b.id = batch FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: no batch %', fn, batch USING ERRCODE = 'no_data_found';
    END IF;
    IF st <> 'open' THEN
        RAISE EXCEPTION '%: batch % is %; jobs can be added to an open batch only', fn, batch, st
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END $$;

-- The closed batches of `ids` that have no member left in a live state become
-- finished, each enqueueing its callback job (the counts merged into its
-- payload as "batch"). Called after the writes that ended members commit (by
-- the completer, the reaper, cancels), by batch_close, and by the reaper's
-- sweep for what a crash left between the two. The state guard makes it
-- exactly once: of two calls at once, the second finds the batch finished.
-- by_counts: look only at batches whose counts say every member ended (16
-- rows at most), before the probes of the members themselves: run on every
-- completer write of a large batch, they walked the index entries of the
-- members already finished (dead until vacuumed), which cost the drain 10-20 %.
-- The reaper's sweep calls it now and then without, for counts that direct
-- SQL changes of job states left wrong. Returns how many batches finished.
CREATE FUNCTION jobhost.batch_finish(ids uuid[], by_counts boolean DEFAULT true) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    b       jobhost.batches%ROWTYPE;
    counts  jsonb;
    cb      uuid;
    n       integer := 0;
BEGIN
    FOR b IN
        UPDATE jobhost.batches x SET state = 'finished', finished_at = now(), finishes = x.finishes + 1
         WHERE x.id IN (SELECT DISTINCT u FROM unnest(ids) AS u ORDER BY u) AND x.state = 'closed'
           AND (NOT by_counts OR (SELECT coalesce(sum(c.total - c.completed - c.failed - c.cancelled), 0)
                                    FROM jobhost.batch_counts c WHERE c.batch_id = x.id) <= 0)
           AND NOT EXISTS (SELECT 1 FROM jobhost.jobs j WHERE j.batch_id = x.id
                              AND j.status IN ('queued', 'retry_scheduled'))
           AND NOT EXISTS (SELECT 1 FROM jobhost.jobs j WHERE j.batch_id = x.id AND j.status = 'migrated_to_redis')
           AND NOT EXISTS (SELECT 1 FROM jobhost.jobs j WHERE j.batch_id = x.id AND j.status = 'running')
        RETURNING x.*
    LOOP
        n := n + 1;
        CONTINUE WHEN b.callback_type IS NULL;
        SELECT jsonb_build_object('id', b.id, 'total', coalesce(sum(c.total), 0),
                                  'completed', coalesce(sum(c.completed), 0),
                                  'failed', coalesce(sum(c.failed), 0),
                                  'cancelled', coalesce(sum(c.cancelled), 0), 'finishes', b.finishes)
          INTO counts FROM jobhost.batch_counts c WHERE c.batch_id = b.id;
        cb := jobhost.enqueue(b.callback_type, b.callback_payload || jsonb_build_object('batch', counts),
                              priority => b.callback_priority,
                              unique_key => 'batch:' || b.id || ':' || b.finishes);
        UPDATE jobhost.batches SET callback_job_id = cb WHERE id = b.id;
    END LOOP;
    RETURN n;
END $$;

-- No more jobs will be added. Waits for enqueues in flight (their share
-- locks), then finishes the batch at once if nothing of it is left to run (an
-- empty batch too). Closing a closed or finished batch again changes nothing
-- (a retried producer may close twice). Returns the batch's state.
CREATE FUNCTION jobhost.batch_close(batch uuid) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    UPDATE jobhost.batches SET state = 'closed', closed_at = now()
     WHERE id = batch AND state = 'open';
    PERFORM jobhost.batch_finish(ARRAY[batch]);
    SELECT state INTO st FROM jobhost.batches WHERE id = batch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobhost.batch_close: no batch %', batch USING ERRCODE = 'no_data_found';
    END IF;
    RETURN st;
END $$;

-- Cancels a batch that has not finished: its members that have not started
-- are cancelled now, the running ones are asked to stop (they end cancelled,
-- or as they end if they finish first); no callback will run. Returns the
-- number of members cancelled now, NULL when the batch had already finished
-- or been cancelled.
CREATE FUNCTION jobhost.batch_cancel(batch uuid) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM 1 FROM jobhost.batches WHERE id = batch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobhost.batch_cancel: no batch %', batch USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE jobhost.batches SET state = 'cancelled', cancelled_at = now()
     WHERE id = batch AND state IN ('open', 'closed');
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE jobhost.jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
     WHERE batch_id = batch AND status = 'running';
    WITH c AS (
        UPDATE jobhost.jobs SET status = 'cancelled', cancel_requested_at = now(), updated_at = now(),
               last_error_message = 'cancelled before it started: its batch was cancelled'
         WHERE batch_id = batch AND status IN ('queued', 'migrated_to_redis', 'retry_scheduled')
        RETURNING 1)
    SELECT count(*) INTO n FROM c;
    PERFORM jobhost.batch_add(batch, 0, cancelled => n);
    RETURN n;
END $$;

-- A batch's state and counts, as `jobctl batch status` and the API show them.
CREATE VIEW jobhost.batch_status AS
SELECT b.id, b.state, b.description, b.callback_type, b.callback_job_id, b.finishes,
       b.created_at, b.closed_at, b.finished_at, b.cancelled_at,
       coalesce(c.total, 0) AS total, coalesce(c.completed, 0) AS completed,
       coalesce(c.failed, 0) AS failed, coalesce(c.cancelled, 0) AS cancelled
  FROM jobhost.batches b
  LEFT JOIN LATERAL (SELECT sum(total) AS total, sum(completed) AS completed, sum(failed) AS failed,
                            sum(cancelled) AS cancelled
                       FROM jobhost.batch_counts WHERE batch_id = b.id) c ON true;

-- The producer API gains batch_id (the signatures of 009 with one more argument).
DROP FUNCTION jobhost.enqueue(text, jsonb, integer, timestamptz, integer, text, text);
--   SELECT jobhost.enqueue('email.send', '{"to": "a@example.com"}', batch_id => '<batch id>');
-- With a unique_key that finds an earlier job, nothing is added to the batch.
CREATE FUNCTION jobhost.enqueue(
    job_type     text,
    payload      jsonb,
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    unique_key   text DEFAULT NULL,
    flow_key     text DEFAULT NULL,
    batch_id     uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
    q      jobhost.job_queues%ROWTYPE;
BEGIN
    IF enqueue.job_type IS NULL OR enqueue.job_type = '' THEN
        RAISE EXCEPTION 'jobhost.enqueue: job_type must be a non-empty text'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.payload IS NULL OR jsonb_typeof(enqueue.payload) <> 'object' THEN
        RAISE EXCEPTION 'jobhost.enqueue: payload must be a JSON object, got %',
            coalesce(jsonb_typeof(enqueue.payload), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.max_attempts IS NOT NULL AND enqueue.max_attempts < 1 THEN
        RAISE EXCEPTION 'jobhost.enqueue: max_attempts must be at least 1, got %', enqueue.max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue.batch_id IS NOT NULL THEN
        PERFORM jobhost.batch_for_enqueue('jobhost.enqueue', enqueue.batch_id);
    END IF;
    SELECT * INTO q FROM jobhost.job_queues WHERE name = enqueue.job_type;

    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, unique_key, flow_key, batch_id)
    VALUES (enqueue.job_type, enqueue.payload, coalesce(enqueue.priority, 100),
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.unique_key,
            jobhost.flow_key_for(coalesce(q.flow_keyed, false), q.flow_key_path, enqueue.payload,
                                 enqueue.flow_key),
            enqueue.batch_id)
    ON CONFLICT (queue_name, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NULL THEN
        SELECT j.id INTO new_id FROM jobhost.jobs j
         WHERE j.queue_name = enqueue.job_type AND j.unique_key = enqueue.unique_key;
    ELSIF enqueue.batch_id IS NOT NULL THEN
        PERFORM jobhost.batch_add(enqueue.batch_id, 1);
    END IF;
    RETURN new_id;
END $$;

DROP FUNCTION jobhost.enqueue_many(text, jsonb[], integer, timestamptz, integer, text);
-- batch_id, when given, is the batch of every job of the call.
CREATE FUNCTION jobhost.enqueue_many(
    job_type     text,
    payloads     jsonb[],
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    flow_key     text DEFAULT NULL,
    batch_id     uuid DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    bad bigint;
    q   jobhost.job_queues%ROWTYPE;
BEGIN
    IF enqueue_many.job_type IS NULL OR enqueue_many.job_type = '' THEN
        RAISE EXCEPTION 'jobhost.enqueue_many: job_type must be a non-empty text'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_many.max_attempts IS NOT NULL AND enqueue_many.max_attempts < 1 THEN
        RAISE EXCEPTION 'jobhost.enqueue_many: max_attempts must be at least 1, got %',
            enqueue_many.max_attempts USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.n INTO bad FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(v, n)
     WHERE p.v IS NULL OR jsonb_typeof(p.v) <> 'object' ORDER BY p.n LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'jobhost.enqueue_many: payloads[%] must be a JSON object, got %', bad,
            coalesce(jsonb_typeof(enqueue_many.payloads[bad]), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF enqueue_many.batch_id IS NOT NULL THEN
        PERFORM jobhost.batch_for_enqueue('jobhost.enqueue_many', enqueue_many.batch_id);
        PERFORM jobhost.batch_add(enqueue_many.batch_id, coalesce(cardinality(enqueue_many.payloads), 0));
    END IF;
    SELECT * INTO q FROM jobhost.job_queues WHERE name = enqueue_many.job_type;

    RETURN QUERY
    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, flow_key, batch_id)
    SELECT enqueue_many.job_type, p.v, coalesce(enqueue_many.priority, 100),
           coalesce(enqueue_many.run_at, now()), enqueue_many.max_attempts,
           jobhost.flow_key_for(coalesce(q.flow_keyed, false), q.flow_key_path, p.v, enqueue_many.flow_key),
           enqueue_many.batch_id
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(v, n)
     ORDER BY p.n
    RETURNING id;
END $$;
