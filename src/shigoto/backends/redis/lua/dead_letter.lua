--[[ dead_letter: record the final failure and move the job to dead with a reason, then
apply its remove_on_fail retention (count 0 removes it at once).

KEYS[1] active    KEYS[2] dead      KEYS[3] jobs      KEYS[4] data
KEYS[5] errors    KEYS[6] progress  KEYS[7] result
ARGV[1] job id    ARGV[2] token     ARGV[3] reason    ARGV[4] now_ms
ARGV[5] the final AttemptError as JSON ("" = none)

Returns: 1 (dead) or 2 (dead and removed by retention)
Errors:  -1  lease lost (no such job, not active, or another token holds it)
Atomic.
]]
--- @include "job"

local active, dead, jobs, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local hashes = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local id, token, reason, now, err = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local job = job_load(jobs, id)
if not holds(job, token) then
  return -1
end
redis.call('ZREM', active, id)
if job.fc == 0 then
  forget(hashes, id)
  return 2
end
job.s = 'dead'
job.rs = reason
job.fm = now
job.t = nil
job.l = nil
job_save(jobs, id, job)
if err ~= '' then
  append_error(errors, id, err)
end
push_final(dead, job, id)
trim(dead, hashes, job.fc, job.fa, now)
return 1
