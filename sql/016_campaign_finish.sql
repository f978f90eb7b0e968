-- 016_campaign_finish: campaigns know when they are delivered (DESIGN §10,
-- §11). campaign.process puts a campaign's email.send jobs in a batch
-- (batch_id) and closes it with the last page ('sent': every job enqueued);
-- the batch's callback, campaign.finish, marks it 'completed' once every job
-- has ended, with what happened to its messages.
ALTER TABLE app.campaigns
    ADD COLUMN batch_id         uuid,
    ADD COLUMN sent_count       integer,   -- handed to a relay
    ADD COLUMN suppressed_count integer,   -- not sent: the address is suppressed
    ADD COLUMN failed_count     integer,   -- not delivered: the job failed or was cancelled
    ADD COLUMN bounced_count    integer,   -- recipients known to have bounced when it completed
    ADD COLUMN completed_at     timestamptz;
ALTER TABLE app.campaigns DROP CONSTRAINT campaigns_status_check;
ALTER TABLE app.campaigns ADD CONSTRAINT campaigns_status_check
    CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'completed', 'failed', 'cancelled'));

-- A recipient who used the one-click unsubscribe of a campaign's mail.
ALTER TABLE app.email_events DROP CONSTRAINT email_events_event_check;
ALTER TABLE app.email_events ADD CONSTRAINT email_events_event_check
    CHECK (event IN ('sent', 'suppressed', 'failed', 'delivered', 'opened', 'clicked', 'bounced', 'complained',
                     'unsubscribed'));
