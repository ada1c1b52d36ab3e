-- Named SQL blocks for batches (SqliteBatches in batches.py). Each block is named after
-- the contract method that runs it, prefixed batch_ (names are global to the package).
-- One row per batch with its counters, one row per chunk: state NULL while pending,
-- the final state once recorded (the UPDATE ... WHERE state IS NULL counts it once).

-- batches_v1 --
CREATE TABLE IF NOT EXISTS batches (
    queue            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    definition       BLOB    NOT NULL,
    total_chunks     INTEGER,
    total_items      INTEGER,
    completed        INTEGER NOT NULL DEFAULT 0,
    dead             INTEGER NOT NULL DEFAULT 0,
    cancelled        INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    finished_ms      INTEGER,
    outcome          TEXT,
    follow_up_id     TEXT,
    PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS batches_newest ON batches (queue, created_ms);
CREATE TABLE IF NOT EXISTS batch_chunks (
    queue    TEXT    NOT NULL,
    batch_id TEXT    NOT NULL,
    idx      INTEGER NOT NULL,
    state    TEXT,
    PRIMARY KEY (queue, batch_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_chunks_pending ON batch_chunks (queue, batch_id, idx)
WHERE state IS NULL;

-- batch_create --
INSERT INTO batches (queue, id, name, created_ms, updated_ms, definition)
VALUES (:queue, :id, :name, :created_ms, :created_ms, :definition)
ON CONFLICT (queue, id) DO NOTHING;

-- batch_expect --
INSERT INTO batch_chunks (queue, batch_id, idx) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING;

-- batch_seal --
UPDATE batches SET total_chunks = :total_chunks, total_items = :total_items, updated_ms = :now
WHERE queue = :queue AND id = :id;

-- batch_record_chunk --
UPDATE batch_chunks SET state = :state
WHERE queue = :queue AND batch_id = :id AND idx = :idx AND state IS NULL;

-- batch_count --
UPDATE batches SET completed = completed + :completed, dead = dead + :dead,
    cancelled = cancelled + :cancelled, updated_ms = :now
WHERE queue = :queue AND id = :id;

-- batch_pending_states --
SELECT c.idx, j.state
FROM batch_chunks AS c
LEFT JOIN jobs AS j ON j.queue = c.queue AND j.id = c.batch_id || ':' || c.idx
WHERE c.queue = :queue AND c.batch_id = :id AND c.state IS NULL
ORDER BY c.idx LIMIT :limit;

-- batch_pending --
SELECT idx FROM batch_chunks
WHERE queue = :queue AND batch_id = :id AND state IS NULL
ORDER BY idx LIMIT :limit;

-- batch_failed --
SELECT idx FROM batch_chunks
WHERE queue = :queue AND batch_id = :id AND state IN ('dead', 'cancelled')
ORDER BY idx LIMIT 1000;

-- batch_finish --
UPDATE batches SET finished_ms = :now, updated_ms = :now, outcome = :outcome,
    follow_up_id = :follow_up_id
WHERE queue = :queue AND id = :id AND finished_ms IS NULL AND total_chunks IS NOT NULL
  AND completed + dead + cancelled >= total_chunks;

-- batch_get --
SELECT id, queue, name, created_ms, definition, updated_ms, total_chunks, total_items,
       completed, dead, cancelled, cancel_requested, finished_ms, outcome, follow_up_id
FROM batches WHERE queue = :queue AND id = :id;

-- batch_list --
SELECT id FROM batches
WHERE queue = :queue AND (:unfinished = 0 OR finished_ms IS NULL)
ORDER BY created_ms DESC, id DESC LIMIT :limit;

-- batch_cancel --
UPDATE batches SET cancel_requested = 1, updated_ms = :now
WHERE queue = :queue AND id = :id;
