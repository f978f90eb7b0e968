-- 007_progress: what a running attempt reports of itself.
--
-- progress is the last value in [0, 1] the handler passed to heartbeat(),
-- written by the host that holds the lease at each lease extension
-- (host.lease.heartbeat_ms); NULL when the attempt reported none. A new lease
-- clears it. Written only on rows that are already being updated, so it adds
-- no write of its own.
ALTER TABLE jobhost.jobs ADD COLUMN progress real
    CHECK (progress IS NULL OR (progress >= 0 AND progress <= 1));
