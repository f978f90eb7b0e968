-- 009_flow: flow keys, fair claims and pauses (DESIGN §9).
--
-- A job's flow key (a tenant, a relay, an endpoint) is stored with it. It is
-- given explicitly (jobhost.enqueue(..., flow_key => 'k'), the API, jobctl) or
-- taken from the payload by the JSON pointer of the queue's flow.key, which the
-- hosts serving the queue register in jobhost.job_queues. NULL: the queue had
-- no flow config when the job was written and none was given; '' : a keyed
-- queue's job whose payload lacks the pointer.
ALTER TABLE jobhost.jobs ADD COLUMN flow_key text COLLATE "C";

-- What the serving hosts' config says of the queue's flow (queue_registry.cpp).
ALTER TABLE jobhost.job_queues
    ADD COLUMN flow_keyed    boolean NOT NULL DEFAULT false,  -- a flow: block: dispatch by key
    ADD COLUMN flow_fair     boolean NOT NULL DEFAULT false,  -- keys take turns in the claim
    ADD COLUMN flow_key_path text[],                          -- flow.key as a #>> path
    ADD COLUMN paused_at     timestamptz;                     -- jobctl queue pause

-- Keys of a queue paused on their own (jobctl queue pause Q --key K).
CREATE TABLE jobhost.paused_keys (
    queue_name text NOT NULL,
    flow_key   text COLLATE "C" NOT NULL,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, flow_key)
);

-- The fair claim walks the keys of a band in order and takes the oldest due
-- jobs of each: one probe per key. Only keyed jobs are in it, so a queue
-- without flow config pays nothing for it.
CREATE INDEX jobs_flow_ready_idx
    ON jobhost.jobs (queue_name, jobhost.priority_band(priority), flow_key, run_at)
    WHERE status IN ('queued', 'retry_scheduled') AND flow_key IS NOT NULL;

-- The key a job of `queue` gets: the explicit one, else the registered
-- pointer's value, else '' for a keyed queue and NULL for another.
CREATE FUNCTION jobhost.flow_key_for(keyed boolean, path text[], payload jsonb, explicit_key text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN explicit_key IS NOT NULL THEN explicit_key
              WHEN keyed THEN coalesce(payload #>> path, '')
         END COLLATE "C"
$$;

-- Plain INSERTs into a keyed queue get their key here, once per statement
-- (jobhost.enqueue and enqueue_many set it themselves and skip the UPDATE).
CREATE OR REPLACE FUNCTION jobhost.jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobhost.job_queues (name)
        SELECT DISTINCT queue_name FROM new_jobs
        ON CONFLICT (name) DO NOTHING;
    UPDATE jobhost.jobs j
       SET flow_key = jobhost.flow_key_for(true, q.flow_key_path, j.payload, NULL)
      FROM new_jobs n JOIN jobhost.job_queues q ON q.name = n.queue_name AND q.flow_keyed
     WHERE n.flow_key IS NULL AND j.id = n.id;
    PERFORM pg_notify('jobhost_jobs', '');
    RETURN NULL;
END $$;

DROP FUNCTION jobhost.enqueue(text, jsonb, integer, timestamptz, integer, text);
-- Producer API, callable inside any transaction:
--   SELECT jobhost.enqueue('email.send', '{"to": "a@example.com"}');
--   SELECT jobhost.enqueue('email.send', '{"to": "a@example.com"}', flow_key => 'tenant_42');
-- With a unique_key, a second call for the same queue and key returns the
-- first job's id instead of inserting.
CREATE FUNCTION jobhost.enqueue(
    job_type     text,
    payload      jsonb,
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    unique_key   text DEFAULT NULL,
    flow_key     text DEFAULT NULL
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
    SELECT * INTO q FROM jobhost.job_queues WHERE name = enqueue.job_type;

    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, unique_key, flow_key)
    VALUES (enqueue.job_type, enqueue.payload, coalesce(enqueue.priority, 100),
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.unique_key,
            jobhost.flow_key_for(coalesce(q.flow_keyed, false), q.flow_key_path, enqueue.payload,
                                 enqueue.flow_key))
    ON CONFLICT (queue_name, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NULL THEN
        SELECT j.id INTO new_id FROM jobhost.jobs j
         WHERE j.queue_name = enqueue.job_type AND j.unique_key = enqueue.unique_key;
    END IF;
    RETURN new_id;
END $$;

DROP FUNCTION jobhost.enqueue_many(text, jsonb[], integer, timestamptz, integer);
-- Bulk producer API: many jobs of one type in one set-based INSERT (one
-- trigger run and one NOTIFY for the whole batch). Callable inside any transaction:
--   SELECT count(*) FROM jobhost.enqueue_many('email.send',
--       ARRAY['{"to": "a@example.com"}', '{"to": "b@example.com"}']::jsonb[]);
-- Returns the new ids in the order of the payloads. Every payload is checked
-- before any row is written; a bad one fails the call naming its position.
-- flow_key, when given, is the key of every job of the call. For
-- deduplicated jobs use jobhost.enqueue() with a unique_key.
CREATE FUNCTION jobhost.enqueue_many(
    job_type     text,
    payloads     jsonb[],
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    flow_key     text DEFAULT NULL
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
    SELECT * INTO q FROM jobhost.job_queues WHERE name = enqueue_many.job_type;

    RETURN QUERY
    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, flow_key)
    SELECT enqueue_many.job_type, p.v, coalesce(enqueue_many.priority, 100),
           coalesce(enqueue_many.run_at, now()), enqueue_many.max_attempts,
           jobhost.flow_key_for(coalesce(q.flow_keyed, false), q.flow_key_path, p.v, enqueue_many.flow_key)
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(v, n)
     ORDER BY p.n
    RETURNING id;
END $$;
