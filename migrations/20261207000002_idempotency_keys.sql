-- Idempotency keys (issue 17): a POST that creates something or queues work
-- may carry an `Idempotency-Key` header. The key's row is inserted in the
-- transaction of the request's effect, so it commits exactly when the effect
-- does: a retry finds it and answers the stored answer instead of running
-- the effect again, and a concurrent twin waits on the row's unique index
-- until the first commits (then finds it) or rolls back (then runs).
--
-- `scope` is the caller's token id (`api_tokens.id`; keys are per caller);
-- `item` is empty for a request, and a user's id for one user's part of a
-- bulk action (each user is its own transaction). `fingerprint` is the
-- SHA-256 of the method, path, query and body: the same key with another
-- request answers 422. `status`/`answer` hold the answer to replay (NULL
-- until stored: the request is still answering, or its answer was lost).
CREATE TABLE idempotency_keys (
    scope bytea NOT NULL,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    item text NOT NULL DEFAULT '',
    fingerprint bytea NOT NULL,
    status smallint CHECK (status BETWEEN 100 AND 599),
    answer bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    PRIMARY KEY (scope, key, item)
);

-- The periodic clean-up deletes expired keys in batches.
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
