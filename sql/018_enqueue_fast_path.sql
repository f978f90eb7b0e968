-- 018_enqueue_fast_path: jobhost.enqueue and enqueue_many do themselves what
-- the two insert triggers would do for them, and the triggers step aside.
--
-- Both functions already read the queue's job_queues row (for its flow key).
-- From it they now also take the default max_attempts, so the BEFORE INSERT
-- row trigger (a PL/pgSQL call and a look-up per row) never fires for them:
-- measured, it was 30 % of a 10,000-job enqueue_many call. And when the row
-- exists (the queue is registered, and every key is set), the AFTER INSERT
-- statement trigger has nothing to do but NOTIFY: the functions say so with a
-- transaction-local setting that the trigger consumes, which spares every
-- single-job enqueue an INSERT ... ON CONFLICT into job_queues and an UPDATE
-- over the new rows. A plain INSERT from any producer gets both triggers as
-- before. The setting is undone with the (sub)transaction if the INSERT fails.

CREATE OR REPLACE FUNCTION jobhost.jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('jobhost.enqueue_registered', true) = 'on' THEN
        PERFORM set_config('jobhost.enqueue_registered', '', true);
    ELSE
        INSERT INTO jobhost.job_queues (name)
            SELECT DISTINCT queue_name FROM new_jobs
            ON CONFLICT (name) DO NOTHING;
        UPDATE jobhost.jobs j
           SET flow_key = jobhost.flow_key_for(true, q.flow_key_path, j.payload, NULL)
          FROM new_jobs n JOIN jobhost.job_queues q ON q.name = n.queue_name AND q.flow_keyed
         WHERE n.flow_key IS NULL AND j.id = n.id;
    END IF;
    PERFORM pg_notify('jobhost_jobs', '');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION jobhost.enqueue(
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
    IF q.name IS NOT NULL THEN
        PERFORM set_config('jobhost.enqueue_registered', 'on', true);
    END IF;

    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, unique_key, flow_key, batch_id)
    VALUES (enqueue.job_type, enqueue.payload, coalesce(enqueue.priority, 100),
            coalesce(enqueue.run_at, now()), coalesce(enqueue.max_attempts, q.default_max_attempts, 3),
            enqueue.unique_key,
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

CREATE OR REPLACE FUNCTION jobhost.enqueue_many(
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
    IF q.name IS NOT NULL THEN
        PERFORM set_config('jobhost.enqueue_registered', 'on', true);
    END IF;

    RETURN QUERY
    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, flow_key, batch_id)
    SELECT enqueue_many.job_type, p.v, coalesce(enqueue_many.priority, 100),
           coalesce(enqueue_many.run_at, now()),
           coalesce(enqueue_many.max_attempts, q.default_max_attempts, 3),
           jobhost.flow_key_for(coalesce(q.flow_keyed, false), q.flow_key_path, p.v, enqueue_many.flow_key),
           enqueue_many.batch_id
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(v, n)
     ORDER BY p.n
    RETURNING id;
END $$;
