-- 013_flow_search: finding the jobs of one flow key (GET /api/v1/jobs?flow_key=K).
-- Only keyed jobs are in it, so queues without a flow: block pay nothing.
CREATE INDEX IF NOT EXISTS jobs_flow_key_idx ON jobhost.jobs (flow_key, id) WHERE flow_key IS NOT NULL;
