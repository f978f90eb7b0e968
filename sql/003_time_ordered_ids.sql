-- Job ids become time-ordered: the first 48 bits are the creation time in
-- milliseconds, the rest random, in the layout of UUID version 7 (RFC 9562).
--
-- Why: every state change of a job is a new row version with a new entry in
-- the primary key (and job_logs' job_id index). With random ids each of those
-- entries lands on a random leaf page, so at a million queued jobs nearly
-- every write dirties a different page and, after each checkpoint, logs a
-- full-page image. Jobs are created and worked roughly in time order, so with
-- time-ordered ids the pages in use stay few and hot, and the cost per job
-- stays flat as the backlog grows. Existing ids are left as they are.
CREATE FUNCTION jobhost.new_job_id() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
           -- version nibble 0100 (random) becomes 0111 (time-ordered)
           set_bit(set_bit(
             overlay(uuid_send(gen_random_uuid())
                     PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                       FROM 3)
                     FROM 1 FOR 6),
             52, 1), 53, 1),
           'hex')::uuid
$$;

ALTER TABLE jobhost.jobs ALTER COLUMN id SET DEFAULT jobhost.new_job_id();
