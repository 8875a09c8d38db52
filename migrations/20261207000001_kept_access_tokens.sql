-- Access tokens kept between sessions (issue 19): a Graph or Gmail access
-- token lives an hour and a Salesforce session two, longer than the 30-minute
-- cadence, so a session reuses the one the last session obtained instead of
-- refreshing. Sealed like the refresh tokens, bound to their own kind, with
-- the moment they stop being used (`expires_at`, a margin already taken off).
ALTER TABLE credentials DROP CONSTRAINT credentials_kind_check;
ALTER TABLE credentials ADD CONSTRAINT credentials_kind_check CHECK (kind IN
    ('mailbox_password', 'mailbox_refresh_token', 'crm_refresh_token', 'impersonation_password',
     'mailbox_access_token', 'crm_access_token'));
ALTER TABLE credentials ADD COLUMN expires_at timestamptz;

-- A refresh token (or password) the provider refused: the user was asked to
-- reconnect once, and sessions stop calling the provider with it until a new
-- one is stored (which clears this).
ALTER TABLE credentials ADD COLUMN refused_at timestamptz;
