--[[ retry: record a failed attempt and schedule the next one: delayed until run_at_ms,
or waiting when that time has already come. A job whose cancellation was requested
while it ran is not retried: it ends cancelled (reason "cancelled").

KEYS[1] wait      KEYS[2] delayed   KEYS[3] active    KEYS[4] jobs
KEYS[5] errors    KEYS[6] marker    KEYS[7] cancelled
ARGV[1] job id    ARGV[2] token     ARGV[3] run_at_ms ARGV[4] now_ms
ARGV[5] the AttemptError as JSON

Returns: 1 (now delayed), 2 (now waiting) or 3 (cancelled)
Errors:  -1  lease lost (no such job, not active, or another token holds it)
Atomic. Wakes blocked workers (a delayed job tells them when to look again).
]]
--- @include "job"

local wait, delayed, active, jobs, errors, marker, cancelled =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, token = ARGV[1], ARGV[2]
local run_at, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local job = job_load(jobs, id)
if not holds(job, token) then
  return -1
end
redis.call('ZREM', active, id)
append_error(errors, id, ARGV[5])
job.r = run_at
job.t = nil
job.l = nil
if job.c then
  finish_cancelled(cancelled, jobs, job, id, now)
  return 3
end
local outcome = schedule_at(delayed, wait, job, id, run_at, now)
job_save(jobs, id, job)
wake(marker)
return outcome
