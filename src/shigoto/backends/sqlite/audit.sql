-- The audit trail of the SQLite backend (contract section "audit"). Rows are only ever
-- inserted (audit_append) or deleted oldest-first by age (audit_prune); no statement
-- updates one.

-- audit_v1 --
-- No secondary index: every index costs each append (a random-order insert for job
-- ids), and the trail is written for every enqueue and run but read rarely. Queries
-- walk seq ranges newest first, a bounded number of rows per call (audit.py).
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    queue   TEXT,
    job_id  TEXT,
    details BLOB
);

-- audit_append --
-- Positional: each row is an AuditEntry as a tuple (msgspec.structs.astuple, in field
-- order), built in C instead of a dict per entry.
INSERT INTO audit (at_ms, actor, action, queue, job_id, details)
VALUES (?, ?, ?, ?, ?, ?);

-- audit_query --
-- Newest first within the seq range [floor, before); every filter is optional (NULL
-- matches all).
SELECT seq, at_ms, actor, action, queue, job_id, details FROM audit
WHERE seq < :before AND seq >= :floor
  AND (:job_id IS NULL OR job_id = :job_id)
  AND (:actor IS NULL OR actor = :actor)
  AND (:action IS NULL OR action = :action)
  AND (:queue IS NULL OR queue = :queue)
  AND (:since IS NULL OR at_ms >= :since)
  AND (:until IS NULL OR at_ms < :until)
ORDER BY seq DESC LIMIT :limit;

-- audit_bounds --
SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM audit;

-- audit_prune --
DELETE FROM audit WHERE seq IN (
    SELECT seq FROM (SELECT seq, at_ms FROM audit ORDER BY seq LIMIT :limit)
    WHERE at_ms < :before
);

-- replace_payload --
UPDATE jobs SET payload = :new
WHERE queue = :queue AND id = :id AND state != 'active' AND payload = :old;
