-- 001_core: the job tables, the producer API and the migrator's wake-up.
-- Applied by `jobctl db migrate`, inside one transaction, recorded in
-- jobhost.schema_migrations. Never edit an applied migration: add a new file.

CREATE SCHEMA IF NOT EXISTS jobhost;

-- One row per job type (= queue). Rows appear on first enqueue; a host that
-- serves the type refreshes served_at and sets its default max_attempts.
CREATE TABLE jobhost.job_queues (
    name                 text PRIMARY KEY,
    default_priority     integer NOT NULL DEFAULT 100,
    default_max_attempts integer NOT NULL DEFAULT 3 CHECK (default_max_attempts >= 1),
    is_active            boolean NOT NULL DEFAULT true,
    served_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobhost.jobs (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    queue_name         text NOT NULL CHECK (queue_name <> ''),
    status             text NOT NULL DEFAULT 'queued'
                       CONSTRAINT jobs_status_valid CHECK (status IN
                         ('queued', 'migrated_to_redis', 'running', 'completed',
                          'retry_scheduled', 'failed', 'cancelled')),
    priority           integer NOT NULL DEFAULT 100,
    payload            jsonb NOT NULL DEFAULT '{}'
                       CONSTRAINT jobs_payload_is_object CHECK (jsonb_typeof(payload) = 'object')
                       CONSTRAINT jobs_payload_too_large CHECK (pg_column_size(payload) <= 1048576),
    -- Counted when a worker leases the job, before it runs (invariant 4).
    attempt_count      integer NOT NULL DEFAULT 0,
    -- NULL on insert takes the queue's default (trigger below).
    max_attempts       integer NOT NULL CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts >= 1),
    run_at             timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    failed_at          timestamptz,
    last_error_message text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- Lease of the running attempt: who holds it and until when.
    worker_id          text,
    lease_expires_at   timestamptz,
    unique_key         text
);

-- A queue table changes most of its rows within minutes: analyze and vacuum it
-- after 1 % of changes, not the default 10 % / 20 %, so plans and dead rows
-- keep up with bursts of millions of jobs.
ALTER TABLE jobhost.jobs SET (autovacuum_analyze_scale_factor = 0.01,
                              autovacuum_vacuum_scale_factor = 0.01,
                              autovacuum_vacuum_insert_scale_factor = 0.01);

-- Migrator: ready jobs of one queue, oldest run_at first.
CREATE INDEX jobs_ready_idx ON jobhost.jobs (queue_name, run_at)
    WHERE status IN ('queued', 'retry_scheduled');
-- Reaper: running jobs by lease deadline.
CREATE INDEX jobs_lease_idx ON jobhost.jobs (lease_expires_at) WHERE status = 'running';
-- Reconciler: jobs handed to Redis, oldest hand-over first.
CREATE INDEX jobs_migrated_idx ON jobhost.jobs (updated_at) WHERE status = 'migrated_to_redis';
-- DLQ listing.
CREATE INDEX jobs_failed_idx ON jobhost.jobs (queue_name, failed_at) WHERE status = 'failed';
-- Deduplicated enqueue.
CREATE UNIQUE INDEX jobs_unique_key_idx ON jobhost.jobs (queue_name, unique_key)
    WHERE unique_key IS NOT NULL;

-- One row per attempt, written with the attempt's outcome.
CREATE TABLE jobhost.job_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         uuid NOT NULL REFERENCES jobhost.jobs (id) ON DELETE CASCADE,
    status         text NOT NULL,
    log_message    text,
    attempt_number integer NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    duration       interval,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_job_idx ON jobhost.job_logs (job_id, attempt_number);

-- max_attempts NULL → the queue's default, else 3. The WHEN clause keeps the
-- call off the bulk path when producers give a value.
CREATE FUNCTION jobhost.jobs_default_max_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT q.default_max_attempts INTO NEW.max_attempts
      FROM jobhost.job_queues q WHERE q.name = NEW.queue_name;
    NEW.max_attempts := coalesce(NEW.max_attempts, 3);
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_default_max_attempts BEFORE INSERT ON jobhost.jobs
    FOR EACH ROW WHEN (NEW.max_attempts IS NULL)
    EXECUTE FUNCTION jobhost.jobs_default_max_attempts();

-- Once per statement: register unseen queues and wake the migrators. Plain
-- INSERTs from any producer get the same treatment as jobhost.enqueue().
CREATE FUNCTION jobhost.jobs_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobhost.job_queues (name)
        SELECT DISTINCT queue_name FROM new_jobs
        ON CONFLICT (name) DO NOTHING;
    PERFORM pg_notify('jobhost_jobs', '');
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_after_insert AFTER INSERT ON jobhost.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION jobhost.jobs_after_insert();

-- Producer API, callable inside any transaction:
--   SELECT jobhost.enqueue('email.send', '{"to": "a@example.com"}');
-- With a unique_key, a second call for the same queue and key returns the
-- first job's id instead of inserting.
CREATE FUNCTION jobhost.enqueue(
    job_type     text,
    payload      jsonb,
    priority     integer DEFAULT 100,
    run_at       timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    unique_key   text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
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

    INSERT INTO jobhost.jobs (queue_name, payload, priority, run_at, max_attempts, unique_key)
    VALUES (enqueue.job_type, enqueue.payload, coalesce(enqueue.priority, 100),
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.unique_key)
    ON CONFLICT (queue_name, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;

    IF new_id IS NULL THEN
        SELECT j.id INTO new_id FROM jobhost.jobs j
         WHERE j.queue_name = enqueue.job_type AND j.unique_key = enqueue.unique_key;
    END IF;
    RETURN new_id;
END $$;
