-- 005_app: the email platform's tables, which the six job-type plugins read and
-- write. Schema app, apart from jobhost's own. Every row belongs to a tenant,
-- and every reference between tenant rows carries tenant_id in its foreign key,
-- so a row of one tenant can never point at a row of another.
--
-- Ids of the rows a tenant names in payloads (lists, templates, campaigns,
-- webhook endpoints) are text, so callers may use their own ("tpl_123"); a
-- default is generated when none is given. High-volume rows use bigint ids.

CREATE SCHEMA IF NOT EXISTS app;

CREATE FUNCTION app.new_id(prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT prefix || '_' || replace(gen_random_uuid()::text, '-', '')
$$;

CREATE TABLE app.tenants (
    id         text PRIMARY KEY DEFAULT app.new_id('tenant') CHECK (id <> ''),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per address per tenant; email is stored lower-cased and trimmed.
CREATE TABLE app.contacts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    email      text NOT NULL CHECK (email = lower(btrim(email)) AND email LIKE '%_@_%'),
    name       text,
    -- Mapped CSV columns other than email and name.
    attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email),
    UNIQUE (tenant_id, id)
);

CREATE TABLE app.contact_lists (
    id            text PRIMARY KEY DEFAULT app.new_id('list') CHECK (id <> ''),
    tenant_id     text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    name          text NOT NULL,
    -- Kept equal to the number of member rows by whoever adds or removes them.
    contact_count integer NOT NULL DEFAULT 0 CHECK (contact_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

CREATE TABLE app.contact_list_members (
    tenant_id  text NOT NULL,
    list_id    text NOT NULL,
    contact_id bigint NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now(),
    -- Campaigns page through a list in contact_id order.
    PRIMARY KEY (tenant_id, list_id, contact_id),
    FOREIGN KEY (tenant_id, list_id) REFERENCES app.contact_lists (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, contact_id) REFERENCES app.contacts (tenant_id, id) ON DELETE CASCADE
);

-- subject, html_body and text_body may hold {{variable}} placeholders.
CREATE TABLE app.email_templates (
    id         text PRIMARY KEY DEFAULT app.new_id('tpl') CHECK (id <> ''),
    tenant_id  text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    from_email text NOT NULL,
    subject    text NOT NULL,
    html_body  text NOT NULL,
    text_body  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

-- Addresses a tenant must not mail (bounced, complained, unsubscribed, manual).
CREATE TABLE app.suppressions (
    tenant_id  text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    email      text NOT NULL CHECK (email = lower(btrim(email))),
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email)
);

CREATE TABLE app.campaigns (
    id                text PRIMARY KEY DEFAULT app.new_id('camp') CHECK (id <> ''),
    tenant_id         text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    name              text NOT NULL,
    list_id           text NOT NULL,
    template_id       text NOT NULL,
    -- campaign.process moves draft/scheduled (or failed, when replayed) to
    -- sending, and sending to sent once every email.send job is enqueued (sent
    -- says nothing of delivery: see app.email_messages). The application may
    -- set cancelled at any time; the fan-out stops at its next page.
    status            text NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'failed', 'cancelled')),
    -- Progress of the fan-out: the last contact_id whose email.send job was
    -- enqueued, written in the same transaction as those jobs.
    cursor_contact_id bigint NOT NULL DEFAULT 0,
    enqueued_count    integer NOT NULL DEFAULT 0,
    started_at        timestamptz,
    finished_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, list_id) REFERENCES app.contact_lists (tenant_id, id),
    FOREIGN KEY (tenant_id, template_id) REFERENCES app.email_templates (tenant_id, id)
);

-- One row per email.send job: the job id is the idempotency key.
CREATE TABLE app.email_messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    job_id        uuid NOT NULL UNIQUE,
    campaign_id   text,
    template_id   text NOT NULL,
    recipient     text NOT NULL,
    subject       text,
    -- sending: an attempt has begun handing it to a relay; the others are final.
    status        text NOT NULL CHECK (status IN ('sending', 'sent', 'suppressed', 'failed')),
    provider      text,
    -- The RFC 5322 Message-ID header sent with it.
    message_id    text,
    attempt       integer NOT NULL DEFAULT 1,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES app.campaigns (tenant_id, id) ON DELETE SET NULL (campaign_id)
);
CREATE INDEX email_messages_campaign_idx ON app.email_messages (tenant_id, campaign_id);

CREATE TABLE app.email_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    message_id  bigint NOT NULL,
    campaign_id text,
    recipient   text NOT NULL,
    event       text NOT NULL CHECK (event IN ('sent', 'suppressed', 'failed', 'delivered',
                                               'opened', 'clicked', 'bounced', 'complained')),
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, message_id) REFERENCES app.email_messages (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX email_events_campaign_idx ON app.email_events (tenant_id, campaign_id, id);

CREATE TABLE app.webhook_endpoints (
    id         text PRIMARY KEY DEFAULT app.new_id('whep') CHECK (id <> ''),
    tenant_id  text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    url        text NOT NULL CHECK (url ~ '^https?://'),
    -- Signs each delivery with HMAC-SHA256.
    secret     text NOT NULL CHECK (length(secret) >= 16),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id)
);

-- One row per webhook.dispatch attempt that reached the network (or was refused
-- before it), for operators and for a tenant's delivery log. status_code is NULL
-- when no HTTP answer came (timeout, refused, cancelled, target not allowed).
-- Trimmed by maintenance.cleanup (retention.webhook_deliveries_days).
CREATE TABLE app.webhook_deliveries (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    endpoint_id text NOT NULL,
    job_id      uuid NOT NULL,
    event       text NOT NULL,
    event_id    text NOT NULL,
    attempt     integer NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES app.webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_endpoint_idx ON app.webhook_deliveries (tenant_id, endpoint_id, id);
-- Rows arrive in created_at order: the retention delete reads only the old end.
CREATE INDEX webhook_deliveries_created_brin ON app.webhook_deliveries USING brin (created_at);

-- One row per import.contacts job.
CREATE TABLE app.imports (
    job_id        uuid PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    list_id       text NOT NULL,
    file_url      text NOT NULL,
    -- retrying: an attempt failed and another will start over (error says why).
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'retrying', 'completed', 'failed')),
    rows_total    bigint NOT NULL DEFAULT 0,
    rows_accepted bigint NOT NULL DEFAULT 0,
    rows_rejected bigint NOT NULL DEFAULT 0,
    error         text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (tenant_id, job_id),
    FOREIGN KEY (tenant_id, list_id) REFERENCES app.contact_lists (tenant_id, id) ON DELETE CASCADE
);

-- Rows of an import that were not taken, with the CSV line they came from.
CREATE TABLE app.import_rejections (
    tenant_id   text NOT NULL,
    import_id   uuid NOT NULL,
    line_number bigint NOT NULL,
    reason      text NOT NULL,
    raw         text,
    PRIMARY KEY (import_id, line_number),
    FOREIGN KEY (tenant_id, import_id) REFERENCES app.imports (tenant_id, job_id) ON DELETE CASCADE
);

-- One row per export.data job.
CREATE TABLE app.exports (
    job_id      uuid PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('contacts', 'email_events')),
    params      jsonb NOT NULL DEFAULT '{}',
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'failed', 'expired')),
    -- Relative to the export root of the plugin's settings.
    path        text,
    rows        bigint,
    bytes       bigint,
    sha256      text,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    expires_at  timestamptz
);
CREATE INDEX exports_expiry_idx ON app.exports (expires_at) WHERE status = 'completed';

-- What a tenant's users see in the application ("your import finished").
CREATE TABLE app.notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    -- The job or row it is about, e.g. the import's job id.
    subject_id text,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz,
    UNIQUE (tenant_id, kind, subject_id)
);
