-- Idempotency of the SQLite backend (contract section "idempotency"): enqueue-side
-- dedup keys and execution-side once-records, both scoped per queue.

-- idempotency_v1 --
-- One row per dedup key: the job that holds it, and until when the TTL holds it even
-- after that job finished (``held_until_ms``; for live-only keys it is the creation
-- time, so liveness alone decides). Stale rows are reaped a few per enqueue, in
-- ``check_ms`` order (a row whose job is still live is looked at again later).
CREATE TABLE IF NOT EXISTS dedup_keys (
    queue         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    job_id        TEXT    NOT NULL,
    held_until_ms INTEGER NOT NULL,
    check_ms      INTEGER NOT NULL,
    PRIMARY KEY (queue, key)
);
CREATE INDEX IF NOT EXISTS dedup_keys_check ON dedup_keys (check_ms);
-- One row per once-key: claimed (owner, claimed_until_ms) or done (done_ms, result).
-- expires_ms is when the row may be forgotten (claim end, or done + TTL; NULL: never).
CREATE TABLE IF NOT EXISTS once_records (
    queue            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    owner            TEXT,
    claimed_until_ms INTEGER,
    done_ms          INTEGER,
    result           BLOB,
    expires_ms       INTEGER,
    PRIMARY KEY (queue, key)
);
CREATE INDEX IF NOT EXISTS once_records_expiry ON once_records (expires_ms)
    WHERE expires_ms IS NOT NULL;

-- once_dedup_get --
SELECT d.job_id, d.held_until_ms, j.state
FROM dedup_keys AS d LEFT JOIN jobs AS j ON j.queue = d.queue AND j.id = d.job_id
WHERE d.queue = :queue AND d.key = :key;

-- once_dedup_take --
INSERT INTO dedup_keys (queue, key, job_id, held_until_ms, check_ms)
VALUES (:queue, :key, :job_id, :held_until, :held_until)
ON CONFLICT (queue, key) DO UPDATE
SET job_id = excluded.job_id, held_until_ms = excluded.held_until_ms,
    check_ms = excluded.check_ms;

-- once_dedup_stale --
-- Candidates for reaping: keys whose TTL has passed, oldest first. Their jobs may
-- still be live; the caller checks and pushes those back.
SELECT d.queue, d.key, j.state
FROM dedup_keys AS d LEFT JOIN jobs AS j ON j.queue = d.queue AND j.id = d.job_id
WHERE d.check_ms < :now AND d.held_until_ms < :now
ORDER BY d.check_ms LIMIT :limit;

-- once_dedup_forget --
DELETE FROM dedup_keys WHERE queue = :queue AND key = :key;

-- once_dedup_recheck_later --
UPDATE dedup_keys SET check_ms = :later WHERE queue = :queue AND key = :key;

-- once_get --
SELECT owner, claimed_until_ms, done_ms, result, expires_ms
FROM once_records WHERE queue = :queue AND key = :key;

-- once_claim --
INSERT INTO once_records (queue, key, owner, claimed_until_ms, done_ms, result, expires_ms)
VALUES (:queue, :key, :owner, :until, NULL, NULL, :until)
ON CONFLICT (queue, key) DO UPDATE
SET owner = excluded.owner, claimed_until_ms = excluded.claimed_until_ms, done_ms = NULL,
    result = NULL, expires_ms = excluded.expires_ms;

-- once_mark --
INSERT INTO once_records (queue, key, owner, claimed_until_ms, done_ms, result, expires_ms)
VALUES (:queue, :key, :owner, NULL, :now, :result, :expires)
ON CONFLICT (queue, key) DO UPDATE
SET owner = excluded.owner, claimed_until_ms = NULL, done_ms = excluded.done_ms,
    result = excluded.result, expires_ms = excluded.expires_ms;

-- once_release --
DELETE FROM once_records
WHERE queue = :queue AND key = :key AND owner = :owner AND done_ms IS NULL;

-- once_reap --
DELETE FROM once_records
WHERE rowid IN (SELECT rowid FROM once_records
                WHERE expires_ms IS NOT NULL AND expires_ms < :now
                ORDER BY expires_ms LIMIT :limit);
