-- 011_audit: every admin write through the API (replay, cancel, purge, pause,
-- bulk actions) leaves one row here: when, who (the API token's name, never
-- the token), what, on which target, and how many jobs it touched. Rows are
-- only inserted; the dashboard shows the latest.
CREATE TABLE jobhost.audit_log (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,            -- api.token, api.tokens[].name, jobctl:<user>, ...
    action text NOT NULL,            -- e.g. job.cancel, dlq.replay, jobs.bulk_replay, queue.pause
    target text NOT NULL DEFAULT '', -- a job id, a queue, or '' for a filtered set
    count  bigint NOT NULL DEFAULT 0,  -- jobs affected
    detail jsonb NOT NULL DEFAULT '{}',  -- the filter of a bulk action, the client's address
    CONSTRAINT audit_log_detail_is_object CHECK (jsonb_typeof(detail) = 'object')
);
CREATE INDEX audit_log_at_brin ON jobhost.audit_log USING brin (at);
