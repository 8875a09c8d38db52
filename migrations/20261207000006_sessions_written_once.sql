-- A sync session's row is written once, when the session ends (issue 19).
--
-- While a session runs, what the admins' views and the sweep need of it (its
-- job, attempt, trigger, slot, start, worker and organization) is on the
-- user's run row, beside the lease, in columns no index covers: the claim
-- and the close stay HOT updates of the run row, and the session's row is
-- one insert at the close (before: an insert at the claim and a non-HOT
-- update at the close, each writing every index of `sync_sessions`, the
-- partial `running` index among them).
--
-- `running_started_at` is set only for a sync session: an admin job's lease
-- (`running_session_id` naming the admin job) has none.
ALTER TABLE user_runs
    ADD COLUMN running_started_at      timestamptz,
    ADD COLUMN running_job_id          uuid,
    ADD COLUMN running_attempt         integer,
    ADD COLUMN running_trigger         text,
    ADD COLUMN running_scheduled_at    timestamptz,
    ADD COLUMN running_worker_id       text,
    ADD COLUMN running_organization_id uuid,
    ADD CONSTRAINT user_runs_running_session CHECK (
        (running_started_at IS NULL AND running_job_id IS NULL AND running_attempt IS NULL
            AND running_trigger IS NULL AND running_scheduled_at IS NULL AND running_worker_id IS NULL
            AND running_organization_id IS NULL)
        OR (running_session_id IS NOT NULL AND running_started_at IS NOT NULL AND running_job_id IS NOT NULL
            AND running_attempt IS NOT NULL AND running_trigger IS NOT NULL AND running_scheduled_at IS NOT NULL
            AND running_worker_id IS NOT NULL AND running_organization_id IS NOT NULL));

-- Sessions running now move to their run rows; a running row no lease names
-- any more (its worker died, the lease was taken since) ends as abandoned,
-- as the sweep would have ended it.
UPDATE user_runs r
SET running_started_at = s.started_at, running_job_id = s.job_id, running_attempt = s.attempt,
    running_trigger = s.trigger, running_scheduled_at = s.scheduled_at, running_worker_id = s.worker_id,
    running_organization_id = s.organization_id
FROM sync_sessions s
WHERE s.status = 'running' AND s.user_id = r.user_id AND s.id = r.running_session_id;

DELETE FROM sync_sessions s
USING user_runs r
WHERE s.status = 'running' AND r.user_id = s.user_id AND r.running_session_id = s.id;

UPDATE sync_sessions
SET status = 'abandoned', ended_at = now(), error_source = 'engine', error_category = 'internal',
    error_message = 'the worker''s lease expired before the session finished'
WHERE status = 'running';

DROP INDEX sync_sessions_running;

-- Every session, the running ones included, as the admins see them.
CREATE VIEW sync_sessions_all AS
SELECT id, user_id, organization_id, job_id, attempt, trigger, scope, status, scheduled_at, started_at,
       ended_at, worker_id, items_to_crm, items_to_mailbox, issue_count, calls, error_category, error_source,
       error_message, exception
FROM sync_sessions
UNION ALL
SELECT running_session_id, user_id, running_organization_id, running_job_id, running_attempt, running_trigger,
       'check', 'running', running_scheduled_at, running_started_at, NULL, running_worker_id, 0, 0, 0,
       '{}'::jsonb, NULL, NULL, NULL, NULL
FROM user_runs
WHERE running_started_at IS NOT NULL;

-- Ends a user's running session as abandoned (its worker died or stalled
-- past its lease): writes the session's row, its only write, and releases
-- the lease, when `held` still holds it. The caller decided the lease
-- expired. An admin job's lease is released with no session written.
-- Answers whether a session was abandoned.
--
-- Written once here for the claim that takes over, the admin job that takes
-- over and the scheduler's sweep.
CREATE FUNCTION abandon_session(for_user uuid, held uuid) RETURNS boolean
LANGUAGE sql AS $$
    WITH running AS (
        SELECT * FROM user_runs WHERE user_id = for_user AND running_session_id = held
    ), written AS (
        INSERT INTO sync_sessions (id, user_id, organization_id, job_id, attempt, trigger, scope, status,
                                   scheduled_at, started_at, ended_at, worker_id, error_category, error_source,
                                   error_message)
        SELECT running_session_id, user_id, running_organization_id, running_job_id, running_attempt,
               running_trigger, 'check', 'abandoned', running_scheduled_at, running_started_at, now(),
               running_worker_id, 'internal', 'engine',
               'the worker''s lease expired before the session finished'
        FROM running WHERE running_started_at IS NOT NULL
        RETURNING id
    ), released AS (
        UPDATE user_runs r SET running_session_id = NULL, lease_expires_at = NULL, running_started_at = NULL,
            running_job_id = NULL, running_attempt = NULL, running_trigger = NULL, running_scheduled_at = NULL,
            running_worker_id = NULL, running_organization_id = NULL,
            last_session_id = CASE WHEN running.running_started_at IS NULL THEN r.last_session_id ELSE held END,
            last_session_at = CASE WHEN running.running_started_at IS NULL THEN r.last_session_at ELSE now() END,
            last_session_status = CASE WHEN running.running_started_at IS NULL THEN r.last_session_status
                                       ELSE 'abandoned' END
        FROM running WHERE r.user_id = running.user_id
    )
    SELECT EXISTS (SELECT 1 FROM written);
$$;
