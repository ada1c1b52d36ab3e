-- Named SQL blocks for metrics, worker liveness and alert states (SqliteMetrics in
-- metrics.py). One row per (queue, resolution, bucket start, job name) holds that
-- bucket's counters as one JSON object, merged in the write transaction; worker beats
-- and alert states are opaque blobs encoded by the core.

-- metrics_v1 --
CREATE TABLE IF NOT EXISTS metric_buckets (
    queue      TEXT    NOT NULL,
    resolution INTEGER NOT NULL,
    start_ms   INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    vals       BLOB    NOT NULL,
    PRIMARY KEY (queue, resolution, start_ms, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS worker_beats (
    id         TEXT    PRIMARY KEY,
    info       BLOB    NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS worker_beats_expiry ON worker_beats (expires_ms);
CREATE TABLE IF NOT EXISTS alert_states (
    key        TEXT    PRIMARY KEY,
    version    INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_history (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    note       BLOB    NOT NULL
);

-- metrics_get_bucket --
SELECT vals FROM metric_buckets
WHERE queue = :queue AND resolution = :resolution AND start_ms = :start AND name = :name;

-- metrics_put_bucket --
INSERT INTO metric_buckets (queue, resolution, start_ms, name, vals)
VALUES (:queue, :resolution, :start, :name, :vals)
ON CONFLICT (queue, resolution, start_ms, name) DO UPDATE SET vals = excluded.vals;

-- metrics_prune --
-- Bounded: at most :limit rows per call; the primary key makes the range a seek.
DELETE FROM metric_buckets
WHERE (queue, resolution, start_ms, name) IN (
    SELECT queue, resolution, start_ms, name FROM metric_buckets
    WHERE queue = :queue AND resolution = :resolution AND start_ms < :before
    LIMIT :limit
);

-- metrics_read --
SELECT name, start_ms, vals FROM metric_buckets
WHERE queue = :queue AND resolution = :resolution AND start_ms >= :since AND start_ms < :until
ORDER BY start_ms, name;

-- metrics_worker_beat --
INSERT INTO worker_beats (id, info, expires_ms) VALUES (:id, :info, :expires)
ON CONFLICT (id) DO UPDATE SET info = excluded.info, expires_ms = excluded.expires_ms;

-- metrics_worker_expire --
DELETE FROM worker_beats WHERE id IN (
    SELECT id FROM worker_beats WHERE expires_ms < :now LIMIT :limit
);

-- metrics_worker_gone --
DELETE FROM worker_beats WHERE id = :id;

-- metrics_list_workers --
SELECT info FROM worker_beats WHERE expires_ms >= :now ORDER BY id LIMIT :limit;

-- metrics_alert_states --
SELECT key, version, state FROM alert_states ORDER BY key LIMIT :limit;

-- metrics_alert_version --
SELECT version FROM alert_states WHERE key = :key;

-- metrics_alert_put --
INSERT INTO alert_states (key, version, state, updated_ms) VALUES (:key, :version, :state, :now)
ON CONFLICT (key) DO UPDATE
SET version = excluded.version, state = excluded.state, updated_ms = excluded.updated_ms;

-- metrics_alert_note --
INSERT INTO alert_history (at_ms, note) VALUES (:now, :note);

-- metrics_alert_trim --
DELETE FROM alert_history WHERE seq <= (SELECT MAX(seq) FROM alert_history) - :keep;

-- metrics_alert_history --
SELECT note FROM alert_history ORDER BY seq DESC LIMIT :limit;

-- metrics_counts_by_name --
-- One state of one queue, at most :limit of its jobs (jobs_by_state index).
SELECT name, count(*) FROM (
  SELECT name FROM jobs WHERE queue = :queue AND state = :state LIMIT :limit
) GROUP BY name;

-- metrics_state_over_limit --
SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = :queue AND state = :state LIMIT 1 OFFSET :limit);

-- metrics_v2 --
-- Lifetime totals per (queue, job name, field): never pruned, so counters built on
-- them never go down. Seeded from the hour buckets stored at upgrade time, so an
-- upgrade does not reset the exported counters (OR IGNORE: running it twice never
-- counts a bucket twice).
CREATE TABLE IF NOT EXISTS metric_totals (
    queue      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    field      TEXT    NOT NULL,
    value      INTEGER NOT NULL,
    PRIMARY KEY (queue, name, field)
) WITHOUT ROWID;
INSERT OR IGNORE INTO metric_totals (queue, name, field, value)
SELECT b.queue, b.name, v.key, SUM(v.value)
FROM metric_buckets AS b, json_each(CAST(b.vals AS TEXT)) AS v
WHERE b.resolution = 3600000
GROUP BY b.queue, b.name, v.key;

-- metrics_v3 --
-- The totals as one JSON object per (queue, job name), like the buckets: a flush then
-- merges one row per job name instead of upserting one row per field (about 90 us
-- instead of 600 us for three names, and the flush holds the write lock that long).
-- Carries over the rows of metrics_v2.
CREATE TABLE IF NOT EXISTS metric_totals_v3 (
    queue      TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    vals       BLOB    NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
INSERT OR IGNORE INTO metric_totals_v3 (queue, name, vals)
SELECT queue, name, json_group_object(field, value) FROM metric_totals GROUP BY queue, name;
DROP TABLE metric_totals;
ALTER TABLE metric_totals_v3 RENAME TO metric_totals;

-- metrics_get_total --
SELECT vals FROM metric_totals WHERE queue = :queue AND name = :name;

-- metrics_put_total --
INSERT INTO metric_totals (queue, name, vals) VALUES (:queue, :name, :vals)
ON CONFLICT (queue, name) DO UPDATE SET vals = excluded.vals;

-- metrics_read_totals --
SELECT name, vals FROM metric_totals WHERE queue = :queue ORDER BY name;
