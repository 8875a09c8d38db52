-- The whole Syncfleet domain: organizations, plans, users and their credentials,
-- sync state, sessions with issues and logs, activities, customizations,
-- notifications, the email outbox, admin jobs and the scheduler's leadership.
--
-- Tables that grow forever (sessions, issues, logs, activities) are partitioned
-- by time and dropped a partition at a time by `syncfleet_drop_partitions`;
-- nothing is ever deleted from them row by row.

-- ---------------------------------------------------------------------------
-- Partition management

-- Creates the partitions of `parent` that cover [from_day, to_day), one per
-- `step` ('day' or 'month'). Partitions are named `<parent>_pYYYYMMDD`, the
-- date being the partition's lower bound; `syncfleet_drop_partitions` reads the
-- bound back from that name.
CREATE FUNCTION syncfleet_ensure_partitions(parent text, step text, from_day date, to_day date)
RETURNS integer
LANGUAGE plpgsql
SET timezone = 'UTC' AS $$
DECLARE
    lower_bound date := date_trunc(step, from_day)::date;
    upper_bound date;
    partition_name text;
    created integer := 0;
BEGIN
    IF step NOT IN ('day', 'month') THEN
        RAISE EXCEPTION 'partition step must be day or month, not %', step;
    END IF;
    WHILE lower_bound < to_day LOOP
        upper_bound := (lower_bound + ('1 ' || step)::interval)::date;
        partition_name := parent || '_p' || to_char(lower_bound, 'YYYYMMDD');
        IF to_regclass(partition_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, parent, lower_bound, upper_bound);
            created := created + 1;
        END IF;
        lower_bound := upper_bound;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops every partition of `parent` whose whole range lies before `cutoff`.
CREATE FUNCTION syncfleet_drop_partitions(parent text, step text, cutoff timestamptz)
RETURNS integer
LANGUAGE plpgsql
SET timezone = 'UTC' AS $$
DECLARE
    child record;
    lower_bound date;
    dropped integer := 0;
BEGIN
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = parent AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
    LOOP
        lower_bound := to_date(right(child.relname, 8), 'YYYYMMDD');
        IF (lower_bound + ('1 ' || step)::interval) <= cutoff THEN
            EXECUTE format('DROP TABLE %I', child.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$;

-- ---------------------------------------------------------------------------
-- Organizations and plans

CREATE TABLE plans (
    id          uuid PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code <> ''),
    name        text NOT NULL CHECK (name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organizations (
    id                      uuid PRIMARY KEY,
    -- The customer's own identifier; unique, and immutable once saved.
    external_id             text NOT NULL UNIQUE CHECK (external_id <> ''),
    name                    text NOT NULL CHECK (name <> ''),
    is_default              boolean NOT NULL DEFAULT false,
    access_type             text NOT NULL CHECK (access_type IN
                                ('exchange_direct', 'exchange_impersonation', 'office365', 'gmail')),
    sync_enabled            boolean NOT NULL DEFAULT true,
    -- Exchange Impersonation: the EWS endpoint and the service account. Its
    -- password is a row of `credentials` (kind 'impersonation_password').
    ews_url                 text,
    impersonation_account   text,
    -- Org-wide settings: free-mail handling, blocklisted domains, baseline days...
    settings                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (access_type <> 'exchange_impersonation'
           OR (ews_url IS NOT NULL AND impersonation_account IS NOT NULL))
);

-- At most one default organization.
CREATE UNIQUE INDEX organizations_one_default ON organizations (is_default) WHERE is_default;
CREATE INDEX organizations_name ON organizations (lower(name));

CREATE FUNCTION syncfleet_guard_organization() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.is_default THEN
            RAISE EXCEPTION 'the default organization cannot be deleted'
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.external_id IS DISTINCT FROM OLD.external_id THEN
        RAISE EXCEPTION 'external_id is immutable once saved'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.is_default IS DISTINCT FROM OLD.is_default THEN
        RAISE EXCEPTION 'is_default cannot change'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER organizations_guard
    BEFORE UPDATE OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION syncfleet_guard_organization();

-- The default organization always exists; users without one land in it.
INSERT INTO organizations (id, external_id, name, is_default, access_type)
VALUES ('00000000-0000-0000-0000-000000000001', 'default', 'Default organization', true, 'office365');

-- ---------------------------------------------------------------------------
-- Users

CREATE TABLE users (
    -- The Sync ID.
    id                      uuid PRIMARY KEY,
    organization_id         uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000001'
                                REFERENCES organizations (id) ON DELETE CASCADE,
    plan_id                 uuid REFERENCES plans (id) ON DELETE SET NULL,
    name                    text NOT NULL CHECK (name <> ''),
    -- The mailbox's SMTP address.
    email                   text NOT NULL CHECK (email <> ''),
    notification_email      text,
    description             text NOT NULL DEFAULT '',
    -- Exchange account name when it differs from the SMTP address.
    account_logon           text,
    salesforce_instance_url text,
    role                    text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'org_admin')),
    -- The user's own synchronization status. New users start disabled until
    -- configured; the three 'disabled_*' values are set by auto-suspend.
    sync_status             text NOT NULL DEFAULT 'disabled' CHECK (sync_status IN
                                ('enabled', 'disabled', 'paused', 'disabled_auth_error',
                                 'disabled_throttling_error', 'disabled_other_error')),
    disabled_reason         text,
    sync_status_changed_at  timestamptz NOT NULL DEFAULT now(),
    mailbox_status          text NOT NULL DEFAULT 'not_initialized'
                                CHECK (mailbox_status IN ('not_initialized', 'initialized')),
    sidebar_status          text NOT NULL DEFAULT 'unknown'
                                CHECK (sidebar_status IN ('unknown', 'installed', 'not_installed')),
    -- Cadence: the next slot, spread evenly over the interval by user id.
    next_sync_at            timestamptz NOT NULL DEFAULT now(),
    -- The cadence job published for this user and not yet finished; the
    -- scheduler never publishes a second one while this is set.
    queued_job_id           uuid,
    queued_at               timestamptz,
    -- The per-user lease: the session running now, until when it is held.
    running_session_id      uuid,
    lease_expires_at        timestamptz,
    force_sync_requested_at timestamptz,
    -- Auto-suspend bookkeeping.
    consecutive_failures    integer NOT NULL DEFAULT 0,
    failure_class           text,
    last_session_id         uuid,
    last_session_at         timestamptz,
    last_session_status     text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((queued_job_id IS NULL) = (queued_at IS NULL)),
    CHECK ((running_session_id IS NULL) = (lease_expires_at IS NULL))
);

CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_organization ON users (organization_id, lower(name));
CREATE INDEX users_name ON users (lower(name));
CREATE INDEX users_created ON users (created_at);
-- The scheduler's scan: only users that may be due.
CREATE INDEX users_due ON users (next_sync_at)
    WHERE sync_status = 'enabled' AND queued_job_id IS NULL;
-- Lost cadence jobs (queued long ago) and expired leases are found by these.
CREATE INDEX users_queued ON users (queued_at) WHERE queued_job_id IS NOT NULL;
CREATE INDEX users_leased ON users (lease_expires_at) WHERE running_session_id IS NOT NULL;

-- Secrets (passwords, refresh tokens, impersonation credentials), encrypted
-- with AES-256-GCM under `key_version`; the associated data binds each
-- ciphertext to its row (id, owner and kind), so a ciphertext copied to
-- another row does not decrypt.
CREATE TABLE credentials (
    id               uuid PRIMARY KEY,
    user_id          uuid REFERENCES users (id) ON DELETE CASCADE,
    organization_id  uuid REFERENCES organizations (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN
                         ('mailbox_password', 'mailbox_refresh_token', 'crm_refresh_token',
                          'impersonation_password')),
    key_version      integer NOT NULL,
    nonce            bytea NOT NULL,
    ciphertext       bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((user_id IS NULL) <> (organization_id IS NULL))
);

CREATE UNIQUE INDEX credentials_user_kind ON credentials (user_id, kind) WHERE user_id IS NOT NULL;
CREATE UNIQUE INDEX credentials_organization_kind ON credentials (organization_id, kind)
    WHERE organization_id IS NOT NULL;

-- Delta tokens and watermarks, one row per user and stream ('graph:inbox',
-- 'graph:sent', 'graph:events', 'ews:inbox', 'gmail:history', 'crm:events'...).
CREATE TABLE sync_state (
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stream      text NOT NULL,
    token       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, stream)
);

-- Which CRM record a mailbox item became, and the reverse.
CREATE TABLE item_mappings (
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mailbox_item_id  text NOT NULL,
    crm_object       text NOT NULL,
    crm_id           text NOT NULL,
    external_id      text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('mailbox_to_crm', 'crm_to_mailbox')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, mailbox_item_id)
);

CREATE INDEX item_mappings_crm ON item_mappings (user_id, crm_id);

-- ---------------------------------------------------------------------------
-- Sessions, issues and logs: partitioned by day.

CREATE TABLE sync_sessions (
    id                uuid NOT NULL,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organization_id   uuid NOT NULL,
    job_id            uuid NOT NULL,
    attempt           integer NOT NULL DEFAULT 1,
    trigger           text NOT NULL CHECK (trigger IN ('cadence', 'force', 'admin')),
    scope             text NOT NULL DEFAULT 'incremental'
                          CHECK (scope IN ('check', 'initial', 'incremental', 'full_resync')),
    status            text NOT NULL DEFAULT 'running' CHECK (status IN
                          ('running', 'succeeded', 'succeeded_with_issues', 'failed',
                           'skipped', 'abandoned')),
    -- The slot the job was scheduled for (cadence) or requested at (force,
    -- admin); started_at minus this is the scheduling lag.
    scheduled_at      timestamptz NOT NULL,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    worker_id         text NOT NULL,
    items_to_crm      integer NOT NULL DEFAULT 0,
    items_to_mailbox  integer NOT NULL DEFAULT 0,
    issue_count       integer NOT NULL DEFAULT 0,
    -- Calls made per provider, e.g. {"graph": 12, "salesforce": 4}.
    calls             jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_category    text,
    error_source      text CHECK (error_source IN ('mailbox', 'crm', 'engine')),
    error_message     text,
    exception         text,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);

CREATE INDEX sync_sessions_user ON sync_sessions (user_id, started_at DESC);
CREATE INDEX sync_sessions_organization ON sync_sessions (organization_id, started_at DESC);
CREATE INDEX sync_sessions_job ON sync_sessions (job_id);
CREATE INDEX sync_sessions_running ON sync_sessions (user_id) WHERE status = 'running';

CREATE TABLE sync_issues (
    id           uuid NOT NULL,
    -- Null for issues recorded outside a session (a dead-lettered job).
    session_id   uuid,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL CHECK (source IN ('mailbox', 'crm', 'engine')),
    category     text NOT NULL CHECK (category IN
                     ('settings', 'auth', 'permission', 'throttled', 'quota', 'sync_state_reset',
                      'validation', 'lock_contention', 'duplicate', 'transient', 'internal')),
    item_ref     text,
    message      text NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX sync_issues_user ON sync_issues (user_id, created_at DESC);
CREATE INDEX sync_issues_session ON sync_issues (session_id) WHERE session_id IS NOT NULL;

-- A session's log: JSON lines (every step with its timing), gzip-compressed.
CREATE TABLE sync_session_logs (
    session_id   uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at   timestamptz NOT NULL,
    log_gzip     bytea NOT NULL,
    PRIMARY KEY (session_id, started_at)
) PARTITION BY RANGE (started_at);

CREATE INDEX sync_session_logs_user ON sync_session_logs (user_id);

-- Jobs that exceeded their delivery limit or their retries, kept for operators.
CREATE TABLE dead_jobs (
    id          uuid PRIMARY KEY,
    job_id      uuid,
    user_id     uuid,
    queue       text NOT NULL,
    reason      text NOT NULL,
    deliveries  integer,
    payload     bytea NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_jobs_dead_at ON dead_jobs (dead_at DESC);
-- A dead letter delivered twice is recorded once.
CREATE UNIQUE INDEX dead_jobs_job ON dead_jobs (job_id);

-- ---------------------------------------------------------------------------
-- Activities (audit): partitioned by month.

CREATE TABLE activities (
    id               uuid NOT NULL,
    organization_id  uuid NOT NULL,
    user_id          uuid,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    -- Who did it: an admin's email, a user's email, or 'system'.
    actor            text NOT NULL,
    kind             text NOT NULL CHECK (kind IN
                         ('user_added', 'user_removed', 'sync_enabled', 'sync_disabled',
                          'disabled_auth_error', 'disabled_throttling_error', 'disabled_other_error',
                          'customization_reapplied', 'organization_changed',
                          'sync_disabled_customization_uninstalled', 'plan_assigned',
                          'organization_created', 'organization_updated',
                          'organization_sync_enabled', 'organization_sync_disabled',
                          'customization_pushed', 'customization_reset', 'mailbox_reset',
                          'mailbox_reinitialized', 'sidebar_installed', 'sidebar_removed')),
    details          text NOT NULL DEFAULT '',
    log              text,
    PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);

CREATE INDEX activities_organization ON activities (organization_id, occurred_at DESC);
CREATE INDEX activities_user ON activities (user_id, occurred_at DESC) WHERE user_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Customizations, defaults and synchronization settings presets

-- A user's saved customization; `version` grows on every save so a push copies
-- exactly one saved state.
CREATE TABLE customizations (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    version     bigint NOT NULL DEFAULT 1,
    document    jsonb NOT NULL,
    source      text NOT NULL DEFAULT 'saved' CHECK (source IN ('saved', 'pushed', 'retrieved', 'default', 'imported')),
    saved_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_default_customizations (
    organization_id  uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    version          bigint NOT NULL DEFAULT 1,
    document         jsonb NOT NULL,
    updated_by       text NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- M12: presets for an organization, a group of users or one user; each setting
-- adjustable by the user or locked.
CREATE TABLE sync_settings_presets (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    scope            text NOT NULL CHECK (scope IN ('organization', 'group', 'user')),
    group_name       text,
    user_id          uuid REFERENCES users (id) ON DELETE CASCADE,
    settings         jsonb NOT NULL,
    locked           text[] NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'group') = (group_name IS NOT NULL)),
    CHECK ((scope = 'user') = (user_id IS NOT NULL))
);

CREATE UNIQUE INDEX sync_settings_presets_organization ON sync_settings_presets (organization_id)
    WHERE scope = 'organization';
CREATE UNIQUE INDEX sync_settings_presets_group ON sync_settings_presets (organization_id, group_name)
    WHERE scope = 'group';
CREATE UNIQUE INDEX sync_settings_presets_user ON sync_settings_presets (user_id) WHERE scope = 'user';

-- Customization pushes and their recipients (the recipient rows make a push
-- resumable after a crash without applying twice or skipping anyone).
CREATE TABLE pushes (
    id                     uuid PRIMARY KEY,
    organization_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    pusher_user_id         uuid REFERENCES users (id) ON DELETE SET NULL,
    requested_by           text NOT NULL,
    customization_version  bigint NOT NULL,
    document               jsonb NOT NULL,
    filter                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    status                 text NOT NULL DEFAULT 'queued'
                               CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    total                  integer NOT NULL DEFAULT 0,
    applied                integer NOT NULL DEFAULT 0,
    failed                 integer NOT NULL DEFAULT 0,
    created_at             timestamptz NOT NULL DEFAULT now(),
    finished_at            timestamptz
);

CREATE TABLE push_recipients (
    push_id     uuid NOT NULL REFERENCES pushes (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'failed')),
    error       text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (push_id, user_id)
);

CREATE INDEX push_recipients_pending ON push_recipients (push_id) WHERE status = 'pending';

-- ---------------------------------------------------------------------------
-- Notifications, email outbox, admin jobs, API tokens

CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);

CREATE INDEX notifications_user ON notifications (user_id, created_at DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

-- Transactional outbox: written in the same transaction as the state that
-- causes the email, sent by a relay; `dedupe_key` makes a re-run harmless.
CREATE TABLE email_outbox (
    id           uuid PRIMARY KEY,
    dedupe_key   text NOT NULL UNIQUE,
    kind         text NOT NULL,
    recipients   text[] NOT NULL CHECK (cardinality(recipients) > 0),
    subject      text NOT NULL,
    body_text    text NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);

CREATE INDEX email_outbox_pending ON email_outbox (next_attempt_at) WHERE status = 'pending';

-- Admin actions that touch outside services run as jobs on the priority queue.
CREATE TABLE admin_jobs (
    id               uuid PRIMARY KEY,
    action           text NOT NULL,
    organization_id  uuid REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          uuid REFERENCES users (id) ON DELETE CASCADE,
    requested_by     text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    request          jsonb NOT NULL DEFAULT '{}'::jsonb,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

CREATE INDEX admin_jobs_user ON admin_jobs (user_id, created_at DESC);
CREATE INDEX admin_jobs_created ON admin_jobs (created_at);

-- Bearer tokens, stored as SHA-256 hashes only.
CREATE TABLE api_tokens (
    id               uuid PRIMARY KEY,
    token_sha256     bytea NOT NULL UNIQUE,
    role             text NOT NULL CHECK (role IN ('admin', 'org_admin', 'user')),
    organization_id  uuid REFERENCES organizations (id) ON DELETE CASCADE,
    user_id          uuid REFERENCES users (id) ON DELETE CASCADE,
    label            text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz,
    revoked_at       timestamptz,
    CHECK (role <> 'org_admin' OR organization_id IS NOT NULL),
    CHECK (role <> 'user' OR user_id IS NOT NULL)
);

-- ---------------------------------------------------------------------------
-- Scheduler leadership: one row per role; the holder renews `expires_at`,
-- a standby takes over once it has passed, and `term` fences a deposed leader.

CREATE TABLE leader_leases (
    name        text PRIMARY KEY,
    holder      uuid,
    term        bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz
);

INSERT INTO leader_leases (name) VALUES ('scheduler');

-- The first partitions; the scheduler's maintenance task keeps creating them
-- ahead of time and drops the expired ones.
SELECT syncfleet_ensure_partitions('sync_sessions', 'day', (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 8);
SELECT syncfleet_ensure_partitions('sync_issues', 'day', (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 8);
SELECT syncfleet_ensure_partitions('sync_session_logs', 'day', (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 8);
SELECT syncfleet_ensure_partitions('activities', 'month', (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 62);
