-- The operator console (issue 16): what `/v1/ops/` reads besides the broker
-- and Redis.

-- Every worker's heartbeat, written by the worker every few seconds (one
-- upsert), marked stopped when it drains to its end. A worker whose heartbeat
-- is older than three intervals has gone silent (killed, partitioned).
CREATE TABLE worker_heartbeats (
    worker_id     text PRIMARY KEY,
    version       text NOT NULL,
    host          text NOT NULL,
    started_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    -- The interval the worker promised to write within.
    interval_ms   integer NOT NULL CHECK (interval_ms > 0),
    draining      boolean NOT NULL DEFAULT false,
    stopped_at    timestamptz,
    -- Deliveries in flight per queue, e.g. {"priority": 0, "cadence": 3, "push": 0}.
    in_flight     jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX worker_heartbeats_seen ON worker_heartbeats (last_seen_at);

-- The fleet's last hours, a value per minute, series, label and source: the
-- workers add what they counted since their last heartbeat (sessions by
-- status, throttled answers by provider, the cadence lag's histogram by
-- bucket), the scheduler leader the queue depths it reads. Each source writes
-- its own rows, so no two writers contend; readers sum over sources.
-- The leader deletes rows older than a day.
CREATE TABLE fleet_minutes (
    minute  timestamptz NOT NULL,
    series  text NOT NULL CHECK (series IN ('sessions', 'throttled', 'lag', 'queue_depth')),
    label   text NOT NULL,
    source  text NOT NULL,
    value   double precision NOT NULL,
    PRIMARY KEY (minute, series, label, source)
);

-- Each Salesforce org's daily API usage as its last answer reported it
-- (`Sforce-Limit-Info`), written with the workers' heartbeats.
CREATE TABLE salesforce_org_usage (
    -- The limiter's account for the org (its instance host).
    org             text PRIMARY KEY,
    used            bigint NOT NULL CHECK (used >= 0),
    allocation      bigint NOT NULL CHECK (allocation > 0),
    reserve_percent smallint NOT NULL CHECK (reserve_percent BETWEEN 0 AND 99),
    observed_at     timestamptz NOT NULL
);

-- Dead jobs become actionable: their kind and organization for the filters,
-- the last error recorded for the job, and what an operator did with it.
ALTER TABLE dead_jobs
    ADD COLUMN kind            text,
    ADD COLUMN organization_id uuid,
    ADD COLUMN status          text NOT NULL DEFAULT 'dead'
                                   CHECK (status IN ('dead', 'replayed', 'discarded')),
    ADD COLUMN resolved_at     timestamptz,
    -- The token's name (and id) of the operator who replayed or discarded it.
    ADD COLUMN resolved_by     text,
    -- The job published by the replay: a new job id, so the dead job's
    -- deduplication (sessions, admin jobs) never mistakes it for a redelivery.
    ADD COLUMN replay_job_id   uuid,
    -- The job's last error as its sessions or its admin job recorded it.
    ADD COLUMN last_error      text,
    ADD CONSTRAINT dead_jobs_resolved CHECK ((status = 'dead') = (resolved_at IS NULL)),
    ADD CONSTRAINT dead_jobs_replayed CHECK ((status = 'replayed') = (replay_job_id IS NOT NULL));

UPDATE dead_jobs d SET kind = CASE WHEN d.queue LIKE '%push%' THEN 'push' ELSE 'sync' END;

-- The console's list: newest first, by status.
DROP INDEX dead_jobs_dead_at;
CREATE INDEX dead_jobs_list ON dead_jobs (status, dead_at DESC, id DESC);

-- Users auto-suspend disabled, for the console and the leader's gauge
-- (rare rows: an index of them is small).
CREATE INDEX users_suspended ON users (organization_id, sync_status_changed_at DESC, id)
    WHERE sync_status IN ('disabled_auth_error', 'disabled_throttling_error', 'disabled_other_error');
