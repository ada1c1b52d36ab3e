-- Dead-letter queue of the SQLite backend (contract section "dead letters").
-- Dead jobs stay in the jobs table (state = 'dead'); the index jobs_by_state
-- (queue, state, finished_ms, +seq) serves newest-first pages and the keyset cursor.

-- dlq_list --
SELECT id, queue, name, reason, attempts, created_ms, finished_ms, seq,
       json_extract(errors, '$[#-1]') AS last_error
FROM jobs
WHERE queue = :queue AND state = 'dead'
  AND (:cursor_ms IS NULL OR (finished_ms, seq) < (:cursor_ms, :cursor_seq))
  AND (:since_ms IS NULL OR finished_ms >= :since_ms)
  AND (:until_ms IS NULL OR finished_ms < :until_ms)
  AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)))
  AND (:reasons IS NULL OR reason IN (SELECT value FROM json_each(:reasons)))
  AND (:error_types IS NULL OR EXISTS (
        SELECT 1 FROM json_each(:error_types) AS t
        WHERE json_extract(jobs.errors, '$[#-1].error_type') = t.value
           OR substr(json_extract(jobs.errors, '$[#-1].error_type'), -length(t.value) - 1)
              = '.' || t.value))
ORDER BY finished_ms DESC, seq DESC
LIMIT :limit;

-- dlq_purge --
DELETE FROM jobs WHERE queue = :queue AND id = :id AND state = 'dead';
