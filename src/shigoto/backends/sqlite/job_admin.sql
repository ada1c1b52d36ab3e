-- Named SQL blocks for operator actions on one job (JobAdminMixin in job_admin.py),
-- prefixed admin_ (names are global to the package). Jobs live in one table whose
-- partial indexes follow the row, so deleting or updating the row is the whole
-- transition: no other index to keep in step.

-- admin_remove --
-- Any state but active: an active job's worker holds the lease.
DELETE FROM jobs WHERE queue = :queue AND id = :id AND state <> 'active';

-- admin_promote --
-- ready_ms = now: ordered among the waiting jobs of its priority as if it had become
-- ready at now (seq, its enqueue order, breaks ties as for every job).
UPDATE jobs SET state = 'waiting', ready_ms = :now
WHERE queue = :queue AND id = :id AND state = 'delayed';
