-- The outbox relay claims an email (`sending`, committed) before it sends it
-- and records the outcome after, retrying that record while the database is
-- away: an email the SMTP server accepted as PostgreSQL went down is no
-- longer sent again. `next_attempt_at` of a `sending` email is the end of
-- its relay's lease: a relay that died sending leaves it to the next pass.
ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_status_check;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed'));
DROP INDEX email_outbox_pending;
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE status IN ('pending', 'sending');
