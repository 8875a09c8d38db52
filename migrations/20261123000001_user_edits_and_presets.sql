-- Editing users, customizations and synchronization settings presets.
--
-- The activity kinds these changes record, and who belongs to a group preset.

-- Every mutation is an activity: a user's fields or mailbox/CRM configuration
-- edited ('user_updated'), a customization saved ('customization_saved'), an
-- organization's default customization set ('default_customization_updated'),
-- a synchronization settings preset written or removed ('sync_settings_changed').
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
     'sync_settings_changed'));

-- The users a group preset applies to. A user is in at most one group, so the
-- merge organization < group < user has one answer; moving a user to another
-- organization takes them out of their group (the group is the old one's).
CREATE TABLE sync_settings_group_members (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    preset_id  uuid NOT NULL REFERENCES sync_settings_presets (id) ON DELETE CASCADE
);

CREATE INDEX sync_settings_group_members_preset ON sync_settings_group_members (preset_id);
