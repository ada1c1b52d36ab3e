-- Named SQL blocks for the SQLite backend. Each block is named after the contract
-- method that runs it (grep "-- claim --" finds it next to claim.lua and Backend.claim).
-- Columns returned to build a JobRecord are listed once in backend.py (RECORD_COLUMNS).

-- migration_1 --
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    payload          BLOB    NOT NULL,
    options          BLOB    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    created_ms       INTEGER NOT NULL,
    ready_ms         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    stalls           INTEGER NOT NULL DEFAULT 0,
    max_stalls       INTEGER NOT NULL DEFAULT 1,
    started_ms       INTEGER,
    finished_ms      INTEGER,
    worker_id        TEXT,
    token            TEXT,
    lease_until_ms   INTEGER,
    progress         BLOB,
    result           BLOB,
    errors           TEXT    NOT NULL DEFAULT '[]',
    reason           TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    UNIQUE (queue, id)
);
-- Partial indexes: each serves exactly one access path and costs nothing for jobs
-- in other states.
CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (queue, priority DESC, ready_ms, seq)
    WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs (queue, ready_ms, seq)
    WHERE state = 'delayed';
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (queue, lease_until_ms)
    WHERE state = 'active';
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (queue, state, finished_ms);
CREATE TABLE IF NOT EXISTS queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);

-- enqueue --
INSERT INTO jobs (id, queue, name, payload, options, state, priority, created_ms, ready_ms,
                  max_stalls, grp)
VALUES (:id, :queue, :name, :payload, :options, :state, :priority, :created_ms, :ready_ms,
        :max_stalls, :grp)
ON CONFLICT (queue, id) DO NOTHING;

-- enqueue_many --
-- enqueue in one executemany: (id, queue, name, payload, options, state, priority,
-- created_ms, ready_ms, max_stalls, grp).
INSERT INTO jobs (id, queue, name, payload, options, state, priority, created_ms, ready_ms,
                  max_stalls, grp)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (queue, id) DO NOTHING;

-- register_queue --
INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING;

-- existing_state --
SELECT state FROM jobs WHERE queue = ? AND id = ?;

-- promote_due --
UPDATE jobs SET state = 'waiting'
WHERE seq IN (SELECT seq FROM jobs
              WHERE queue = :queue AND state = 'delayed' AND ready_ms <= :now
              ORDER BY ready_ms, seq LIMIT :limit);

-- next_due --
-- The earliest delayed job's ready time (jobs_delayed: one index probe), NULL for none.
SELECT MIN(ready_ms) FROM jobs WHERE queue = ? AND state = 'delayed';

-- is_paused --
SELECT paused FROM queues WHERE name = ?;

-- claim --
-- The token is "<seq>.<16 random hex digits>": unguessable as before, and it names the
-- row, so the finishing transitions that take many leases at once (complete_many) find
-- it by rowid instead of through the (queue, id) index.
UPDATE jobs
SET state = 'active', token = seq || '.' || lower(hex(randomblob(8))), worker_id = :worker,
    lease_until_ms = :lease_until, started_ms = :now, attempts = attempts + 1
WHERE seq IN (SELECT seq FROM jobs
              WHERE queue = :queue AND state = 'waiting'
              ORDER BY priority DESC, ready_ms, seq LIMIT :limit)
RETURNING {columns}, token;

-- extend --
UPDATE jobs SET lease_until_ms = :lease_until
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active'
RETURNING cancel_requested;

-- update_progress --
UPDATE jobs SET progress = :progress
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- complete --
UPDATE jobs
SET state = 'completed', result = :result, finished_ms = :now, token = NULL,
    lease_until_ms = NULL
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- complete_and_remove --
DELETE FROM jobs WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- complete_many --
-- complete for many leases in one executemany: (result, now, seq, token, queue, id).
UPDATE jobs
SET state = 'completed', result = ?, finished_ms = ?, token = NULL, lease_until_ms = NULL
WHERE seq = ? AND token = ? AND queue = ? AND id = ? AND state = 'active';

-- complete_and_remove_many --
-- complete_and_remove for many leases in one executemany: (seq, token, queue, id).
DELETE FROM jobs WHERE seq = ? AND token = ? AND queue = ? AND id = ? AND state = 'active';

-- trim_by_count --
DELETE FROM jobs
WHERE seq IN (SELECT seq FROM jobs WHERE queue = :queue AND state = :state
              ORDER BY finished_ms DESC, seq DESC LIMIT -1 OFFSET :keep);

-- trim_by_age --
DELETE FROM jobs
WHERE seq IN (SELECT seq FROM jobs WHERE queue = :queue AND state = :state
              AND finished_ms < :before LIMIT :limit);

-- retry --
-- A job whose cancellation was requested while it ran is not retried: it is cancelled.
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE :state END,
    reason = CASE WHEN cancel_requested THEN 'cancelled' ELSE reason END,
    finished_ms = CASE WHEN cancel_requested THEN :now ELSE finished_ms END,
    ready_ms = :run_at, token = NULL, lease_until_ms = NULL,
    errors = json_insert(errors, '$[#]', json(:error))
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- dead_letter --
UPDATE jobs
SET state = 'dead', reason = :reason, finished_ms = :now, token = NULL, lease_until_ms = NULL,
    errors = CASE WHEN :error IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(:error)) END
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- dead_letter_corrupt --
-- A record claim could not decode (written by something other than shigoto, or
-- damaged): dead at once with reason 'corrupt_record' and the decoding error in its
-- history, so it neither blocks the claim of the healthy jobs around it nor comes back.
-- Unreadable options / history are reset (:options_ok / :errors_ok = 0) so the record
-- can still be listed, inspected and purged.
UPDATE jobs
SET state = 'dead', reason = 'corrupt_record', finished_ms = :now, token = NULL,
    lease_until_ms = NULL,
    options = CASE WHEN :options_ok THEN options ELSE '{}' END,
    errors = json_insert(CASE WHEN :errors_ok THEN errors ELSE '[]' END, '$[#]', json(:error))
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- dead_letter_and_remove --
DELETE FROM jobs WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- release --
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'waiting' END,
    reason = CASE WHEN cancel_requested THEN 'cancelled' ELSE reason END,
    finished_ms = CASE WHEN cancel_requested THEN :now ELSE finished_ms END,
    attempts = CASE WHEN cancel_requested THEN attempts ELSE max(attempts - 1, 0) END,
    token = NULL, lease_until_ms = NULL,
    errors = CASE WHEN :note IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(:note)) END
WHERE queue = :queue AND id = :id AND token = :token AND state = 'active';

-- recover_stalled --
UPDATE jobs
SET state = CASE WHEN stalls + 1 > max_stalls THEN 'dead' ELSE 'waiting' END,
    reason = CASE WHEN stalls + 1 > max_stalls THEN 'stalled_too_often' ELSE reason END,
    finished_ms = CASE WHEN stalls + 1 > max_stalls THEN :now ELSE NULL END,
    attempts = CASE WHEN stalls + 1 > max_stalls THEN attempts ELSE max(attempts - 1, 0) END,
    stalls = stalls + 1, token = NULL, lease_until_ms = NULL,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempts, 'error_type', 'Stalled',
        'message', 'lease expired: worker ' || coalesce(worker_id, '?') ||
                   ' stopped heartbeating (crashed, killed or blocked)',
        'traceback', '', 'worker_id', coalesce(worker_id, ''),
        'started_ms', started_ms, 'ended_ms', :now))
WHERE seq IN (SELECT seq FROM jobs WHERE queue = :queue AND state = 'active'
              AND lease_until_ms < :now LIMIT :limit)
RETURNING id, state;

-- get --
SELECT {columns} FROM jobs WHERE queue = ? AND id = ?;

-- counts --
SELECT state, count(*) FROM jobs WHERE queue = ? GROUP BY state;

-- queues --
SELECT name FROM queues ORDER BY name;

-- list_ready --
SELECT {columns} FROM jobs WHERE queue = :queue AND state = :state
ORDER BY priority DESC, ready_ms, seq LIMIT :limit OFFSET :offset;

-- list_delayed --
SELECT {columns} FROM jobs WHERE queue = :queue AND state = :state
ORDER BY ready_ms, seq LIMIT :limit OFFSET :offset;

-- list_recent --
SELECT {columns} FROM jobs WHERE queue = :queue AND state = :state
ORDER BY coalesce(finished_ms, started_ms, created_ms) DESC, seq DESC
LIMIT :limit OFFSET :offset;

-- cancel_pending --
UPDATE jobs SET state = 'cancelled', finished_ms = :now, reason = 'cancelled'
WHERE queue = :queue AND id = :id AND state IN ('waiting', 'delayed');

-- cancel_active --
UPDATE jobs SET cancel_requested = 1
WHERE queue = :queue AND id = :id AND state = 'active';

-- set_paused --
INSERT INTO queues (name, paused) VALUES (:queue, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- redrive --
UPDATE jobs
SET state = :state, attempts = 0, stalls = 0, reason = NULL, finished_ms = NULL,
    started_ms = NULL, ready_ms = :run_at, result = NULL, progress = NULL, worker_id = NULL,
    cancel_requested = 0,
    errors = CASE WHEN :note IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(:note)) END
WHERE queue = :queue AND id = :id AND state = 'dead';
