-- The audit trail of the SQLite backend (contract section "audit"). Rows are only ever
-- inserted (audit_append) or deleted oldest-first by age (audit_prune); no statement
-- updates one.

-- audit_v1 --
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    queue   TEXT,
    job_id  TEXT,
    details BLOB
);
-- One index only, for a job's history (`shigoto audit --job`): every index costs each
-- append, and the trail is written far more often than read. Other filters scan
-- newest-first from a cursor; pruning walks from the oldest seq (rows are appended in
-- time order, give or take producers' clock skew).
CREATE INDEX IF NOT EXISTS audit_job ON audit (job_id, seq) WHERE job_id IS NOT NULL;

-- audit_append --
INSERT INTO audit (at_ms, actor, action, queue, job_id, details)
VALUES (:at_ms, :actor, :action, :queue, :job_id, :details);

-- audit_query --
-- Newest first, keyset-paginated on seq; every filter is optional (NULL matches all).
SELECT seq, at_ms, actor, action, queue, job_id, details FROM audit
WHERE seq < :before
  AND (:job_id IS NULL OR job_id = :job_id)
  AND (:actor IS NULL OR actor = :actor)
  AND (:action IS NULL OR action = :action)
  AND (:queue IS NULL OR queue = :queue)
  AND (:since IS NULL OR at_ms >= :since)
  AND (:until IS NULL OR at_ms < :until)
ORDER BY seq DESC LIMIT :limit;

-- audit_prune --
DELETE FROM audit WHERE seq IN (
    SELECT seq FROM (SELECT seq, at_ms FROM audit ORDER BY seq LIMIT :limit)
    WHERE at_ms < :before
);

-- replace_payload --
UPDATE jobs SET payload = :new
WHERE queue = :queue AND id = :id AND state != 'active' AND payload = :old;
