-- Named SQL blocks for schedules (SchedulesMixin in schedules.py). Each block is named
-- after the contract method that runs it, prefixed schedule_ (names are global to the
-- package). One row per schedule name: its tick state and, for schedules added at run
-- time, the opaque definition the core encoded.

-- schedules_v1 --
CREATE TABLE IF NOT EXISTS schedules (
    name            TEXT    PRIMARY KEY,
    since_ms        INTEGER NOT NULL,
    last_fire_ms    INTEGER,
    last_queue      TEXT,
    last_job_id     TEXT,
    last_claimed_ms INTEGER,
    definition      BLOB,
    updated_ms      INTEGER NOT NULL
);

-- schedule_register --
INSERT INTO schedules (name, since_ms, updated_ms) VALUES (:name, :now, :now)
ON CONFLICT (name) DO NOTHING;

-- schedule_claim_tick --
-- The WHERE of the upsert is the whole exactly-once guarantee: a tick is claimed only
-- by moving last_fire_ms strictly forward, inside the transaction that enqueues its job.
INSERT INTO schedules (name, since_ms, last_fire_ms, last_queue, last_job_id,
                       last_claimed_ms, updated_ms)
VALUES (:name, :now, :fire, :queue, :job_id, :now, :now)
ON CONFLICT (name) DO UPDATE
SET last_fire_ms = excluded.last_fire_ms, last_queue = excluded.last_queue,
    last_job_id = excluded.last_job_id, last_claimed_ms = excluded.last_claimed_ms,
    updated_ms = excluded.updated_ms
WHERE schedules.last_fire_ms IS NULL OR schedules.last_fire_ms < excluded.last_fire_ms;

-- schedule_states --
SELECT name, since_ms, last_fire_ms, last_queue, last_job_id, last_claimed_ms, definition
FROM schedules ORDER BY name LIMIT :limit;

-- schedule_save --
INSERT INTO schedules (name, since_ms, definition, updated_ms)
VALUES (:name, :now, :definition, :now)
ON CONFLICT (name) DO UPDATE
SET definition = excluded.definition, updated_ms = excluded.updated_ms;

-- schedule_delete --
DELETE FROM schedules WHERE name = :name;
