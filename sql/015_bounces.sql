-- Returned mail (DESIGN §11): one row per failed recipient of a bounce, a
-- complaint or an auto-reply that bounce.process read from the inbound
-- Maildir, and per RCPT 5xx that email.send met at the relay (source_file
-- NULL). kind says whether the ADDRESS is bad (jobhost_plugins/bounce_kind.hpp):
-- hard suppresses at once, soft after a number within a window.
CREATE TABLE app.email_bounces (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when the bounce names no message of ours that app.email_messages has.
    tenant_id        text REFERENCES app.tenants (id) ON DELETE CASCADE,
    -- Lower case; '' when neither the report nor the matched message names one.
    recipient        text NOT NULL,
    -- The RFC 3463 code ("5.1.1"), NULL when the report gives none.
    status           text,
    reply_code       integer CHECK (reply_code BETWEEN 200 AND 599),
    diagnostic       text,
    kind             text NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint', 'auto_reply', 'unknown')),
    -- The RFC 5322 Message-ID of the original ("<job-id@jobhost>"), when found.
    message_id       text,
    job_id           uuid,
    email_message_id bigint,
    -- The bounce.process payload's path under inbound_root ("new/<file>").
    source_file      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, email_message_id) REFERENCES app.email_messages (tenant_id, id)
        ON DELETE SET NULL (email_message_id)
);

-- A retried bounce.process attempt finds its rows here and adds none.
CREATE UNIQUE INDEX email_bounces_source_idx ON app.email_bounces (source_file, recipient, kind)
    WHERE source_file IS NOT NULL;
-- The soft-bounce threshold: a tenant's soft bounces of one address in a window.
CREATE INDEX email_bounces_soft_idx ON app.email_bounces (tenant_id, recipient, created_at)
    WHERE kind = 'soft';
-- A message's bounces, for the campaign's counts and the job's page.
CREATE INDEX email_bounces_message_idx ON app.email_bounces (tenant_id, email_message_id)
    WHERE email_message_id IS NOT NULL;
