-- The fleet's hot per-user state (issue 19): the next cadence slot, the
-- cadence job queued, the session running (the per-user lease), the
-- auto-suspend count and the last session, in a narrow table of their own,
-- keyed by user, with only the index the scheduler's scan needs. A claim and
-- a close change only columns no index covers, so their updates are HOT (no
-- index entry written; `fillfactor` leaves room on the page); only the
-- scheduler's queueing, which moves the slot, writes one. In `users` these
-- columns were covered by three partial indexes, so every claim, close and
-- queueing rewrote all eleven of its indexes, two of them trigram GIN.
--
-- Lock order: a transaction that locks a user's row and its run row locks
-- the user's first (the api does, and a worker's claim waits on it).
--
-- Expired leases are found through the running sessions
-- (`sync_sessions_running`) and lost cadence jobs through the slot index
-- (their slot passed while they stayed queued), so no index covers the lease
-- or the queued job.
--
-- What admins edit stays in `users`, whose rows a session no longer writes
-- (but for an auto-suspension).
CREATE TABLE user_runs (
    user_id             uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- Cadence: the next slot, spread evenly over the interval by user id.
    next_sync_at        timestamptz NOT NULL DEFAULT now(),
    -- The cadence job published for this user and not yet finished; the
    -- scheduler never publishes a second one while this is set.
    queued_job_id       uuid,
    queued_at           timestamptz,
    -- The per-user lease: the session running now, until when it is held.
    running_session_id  uuid,
    lease_expires_at    timestamptz,
    -- Auto-suspend bookkeeping.
    consecutive_failures integer NOT NULL DEFAULT 0,
    failure_class       text,
    -- The user's last session that ended.
    last_session_id     uuid,
    last_session_at     timestamptz,
    last_session_status text,
    CHECK ((queued_job_id IS NULL) = (queued_at IS NULL)),
    CHECK ((running_session_id IS NULL) = (lease_expires_at IS NULL))
) WITH (fillfactor = 70);

INSERT INTO user_runs (user_id, next_sync_at, queued_job_id, queued_at, running_session_id, lease_expires_at,
                       consecutive_failures, failure_class, last_session_id, last_session_at, last_session_status)
SELECT id, next_sync_at, queued_job_id, queued_at, running_session_id, lease_expires_at,
       consecutive_failures, failure_class, last_session_id, last_session_at, last_session_status
FROM users;

-- The scheduler's scan (due users) and the sweep of lost jobs.
CREATE INDEX user_runs_due ON user_runs (next_sync_at);

DROP INDEX users_due;
DROP INDEX users_queued;
DROP INDEX users_leased;
ALTER TABLE users
    DROP COLUMN next_sync_at,
    DROP COLUMN queued_job_id,
    DROP COLUMN queued_at,
    DROP COLUMN running_session_id,
    DROP COLUMN lease_expires_at,
    DROP COLUMN consecutive_failures,
    DROP COLUMN failure_class,
    DROP COLUMN last_session_id,
    DROP COLUMN last_session_at,
    DROP COLUMN last_session_status;

-- Every user has its run row from the statement that creates it (due at
-- once, as before); bulk inserts pay one statement, not one per row.
CREATE FUNCTION user_runs_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_runs (user_id) SELECT id FROM created;
    RETURN NULL;
END;
$$;
CREATE TRIGGER users_open_runs AFTER INSERT ON users
    REFERENCING NEW TABLE AS created FOR EACH STATEMENT EXECUTE FUNCTION user_runs_open();
