-- A tenant's sending domains and their DKIM keys (DESIGN §11). email_send
-- signs every message whose From domain has a row here; a row whose key is
-- missing or unusable fails such a message for good instead of sending it
-- unsigned.
CREATE TABLE app.sending_domains (
    tenant_id        text NOT NULL REFERENCES app.tenants (id) ON DELETE CASCADE,
    -- The From address's domain, lower case, as in "news@Example.COM" -> example.com.
    domain           text NOT NULL CHECK (domain <> '' AND domain = lower(btrim(domain))),
    -- The DNS record is <dkim_selector>._domainkey.<domain>.
    dkim_selector    text NOT NULL CHECK (dkim_selector ~ '^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$'),
    -- The private key as PEM text (PKCS#8 "PRIVATE KEY", or "RSA PRIVATE KEY").
    -- NULL: the domain is set up but its key is not there yet.
    dkim_private_key text,
    dkim_algorithm   text NOT NULL DEFAULT 'rsa-sha256' CHECK (dkim_algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, domain)
);

-- email_send caches templates and keys by (tenant, id, updated_at) and checks
-- updated_at with every message: an UPDATE must move it, whatever the writer
-- remembered to set.
CREATE FUNCTION app.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER email_templates_touch BEFORE UPDATE ON app.email_templates
    FOR EACH ROW EXECUTE FUNCTION app.touch_updated_at();
CREATE TRIGGER sending_domains_touch BEFORE UPDATE ON app.sending_domains
    FOR EACH ROW EXECUTE FUNCTION app.touch_updated_at();

-- Every app.email_events row's foreign key check looks app.email_messages up
-- by (tenant_id, id). With this index also leading with tenant_id, the check's
-- plan, made once per connection while the table was small, scanned the
-- tenant's whole index range for each event (37 ms per check at 3,500
-- messages in bench/campaign.sh, growing with the table). Leading with
-- campaign_id it still serves "this tenant's campaign" lookups and cannot be
-- mistaken for the (tenant_id, id) key.
DROP INDEX app.email_messages_campaign_idx;
CREATE INDEX email_messages_campaign_idx ON app.email_messages (campaign_id, tenant_id);
