-- Named SQL blocks for rate limits and concurrency caps (rate_limits.py, issue 11).
-- The limits are enforced inside the claim transaction (backend.py, -- claim --):
-- queue_limits holds each queue's settings and hold, rate_log is the sliding log (one
-- row per claimed job: grp '' for the queue's own window, the group name for a
-- group's), group_holds the holds asked for by RateLimited on grouped jobs.

-- rate_limits_v1 --
ALTER TABLE jobs ADD COLUMN grp TEXT;
CREATE TABLE IF NOT EXISTS queue_limits (
    queue                TEXT PRIMARY KEY,
    rate_max             INTEGER,
    rate_period_ms       INTEGER,
    max_active           INTEGER,
    group_rate_max       INTEGER,
    group_rate_period_ms INTEGER,
    held_until_ms        INTEGER,
    last_group           TEXT
);
CREATE TABLE IF NOT EXISTS rate_log (
    queue TEXT    NOT NULL,
    grp   TEXT    NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_log_window ON rate_log (queue, grp, at_ms);
CREATE TABLE IF NOT EXISTS group_holds (
    queue    TEXT    NOT NULL,
    grp      TEXT    NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, grp)
);

-- limits_get --
SELECT rate_max, rate_period_ms, max_active, group_rate_max, group_rate_period_ms,
       held_until_ms, last_group
FROM queue_limits WHERE queue = ?;

-- limits_set --
-- The hold and the rotation position survive a change of the limits.
INSERT INTO queue_limits (queue, rate_max, rate_period_ms, max_active, group_rate_max,
                          group_rate_period_ms)
VALUES (:queue, :rate_max, :rate_period_ms, :max_active, :group_rate_max,
        :group_rate_period_ms)
ON CONFLICT (queue) DO UPDATE
SET rate_max = excluded.rate_max, rate_period_ms = excluded.rate_period_ms,
    max_active = excluded.max_active, group_rate_max = excluded.group_rate_max,
    group_rate_period_ms = excluded.group_rate_period_ms;

-- limits_hold_queue --
INSERT INTO queue_limits (queue, held_until_ms) VALUES (:queue, :until)
ON CONFLICT (queue) DO UPDATE
SET held_until_ms = max(coalesce(held_until_ms, 0), excluded.held_until_ms);

-- limits_hold_group --
INSERT INTO group_holds (queue, grp, until_ms) VALUES (:queue, :grp, :until)
ON CONFLICT (queue, grp) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms);

-- limits_group_holds --
SELECT grp, until_ms FROM group_holds
WHERE queue = :queue AND until_ms > :now AND grp IN (SELECT value FROM json_each(:groups));

-- limits_forget_holds --
DELETE FROM group_holds WHERE queue = :queue AND until_ms <= :now;

-- limits_last_group --
UPDATE queue_limits SET last_group = :grp WHERE queue = :queue;

-- limits_active --
SELECT count(*) FROM jobs WHERE queue = ? AND state = 'active';

-- limits_expire --
DELETE FROM rate_log WHERE queue = :queue AND grp = :grp AND at_ms <= :before;

-- limits_expire_groups --
DELETE FROM rate_log WHERE queue = :queue AND grp <> '' AND at_ms <= :before;

-- limits_used --
SELECT count(*) FROM rate_log WHERE queue = :queue AND grp = :grp;

-- limits_nth_oldest --
SELECT at_ms FROM rate_log WHERE queue = :queue AND grp = :grp
ORDER BY at_ms LIMIT 1 OFFSET :offset;

-- limits_log --
INSERT INTO rate_log (queue, grp, at_ms) VALUES (?, ?, ?);

-- limits_scan --
SELECT seq, grp FROM jobs WHERE queue = :queue AND state = 'waiting'
ORDER BY priority DESC, ready_ms, seq LIMIT :limit;

-- limits_park --
-- Jobs of a group over its limit wait as delayed until the group's next slot.
UPDATE jobs SET state = 'delayed', ready_ms = :until
WHERE state = 'waiting' AND seq IN (SELECT value FROM json_each(:seqs));

-- claim_seqs --
-- Tokens as in claim (queries.sql).
UPDATE jobs
SET state = 'active', token = seq || '.' || lower(hex(randomblob(8))), worker_id = :worker,
    lease_until_ms = :lease_until, started_ms = :now, attempts = attempts + 1
WHERE state = 'waiting' AND seq IN (SELECT value FROM json_each(:seqs))
RETURNING {columns}, token;

-- postpone --
-- RateLimited: back to delayed (or waiting when due) without counting the attempt.
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE :state END,
    reason = CASE WHEN cancel_requested THEN 'cancelled' ELSE reason END,
    finished_ms = CASE WHEN cancel_requested THEN :now ELSE finished_ms END,
    attempts = CASE WHEN cancel_requested THEN attempts ELSE max(attempts - 1, 0) END,
    ready_ms = CASE WHEN cancel_requested THEN ready_ms ELSE :run_at END,
    token = NULL, lease_until_ms = NULL
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active'
RETURNING grp;
