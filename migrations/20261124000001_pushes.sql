-- Customization pushes, retrieval from a colleague and notifications.
--
-- The activity kinds these record: a push queued by its pusher
-- ('customization_push_queued'; each recipient's gets 'customization_pushed'),
-- a colleague's customization retrieved ('customization_retrieved') and an
-- add-in user's notifications marked read ('notifications_read').
ALTER TABLE activities DROP CONSTRAINT activities_kind_check;
ALTER TABLE activities ADD CONSTRAINT activities_kind_check CHECK (kind IN
    ('user_added', 'user_removed', 'sync_enabled', 'sync_disabled',
     'disabled_auth_error', 'disabled_throttling_error', 'disabled_other_error',
     'customization_reapplied', 'organization_changed',
     'sync_disabled_customization_uninstalled', 'plan_assigned',
     'organization_created', 'organization_updated',
     'organization_sync_enabled', 'organization_sync_disabled',
     'customization_pushed', 'customization_reset', 'mailbox_reset',
     'mailbox_reinitialized', 'sidebar_installed', 'sidebar_removed',
     'user_updated', 'customization_saved', 'default_customization_updated',
     'sync_settings_changed',
     'customization_push_queued', 'customization_retrieved', 'notifications_read'));

-- "Only users of the product" finds users who received a push once; a
-- user's deletion cascades to their recipient rows.
CREATE INDEX push_recipients_user ON push_recipients (user_id);

-- The recipients a batch takes, in a stable order.
DROP INDEX push_recipients_pending;
CREATE INDEX push_recipients_pending ON push_recipients (push_id, user_id) WHERE status = 'pending';

-- Pushes of an organization, newest first.
CREATE INDEX pushes_organization ON pushes (organization_id, created_at DESC);

-- A user's notifications newest first, with the id as the tie-breaker of
-- the pages and of the live stream's replay (`Last-Event-ID`).
DROP INDEX notifications_user;
CREATE INDEX notifications_user ON notifications (user_id, created_at DESC, id DESC);
