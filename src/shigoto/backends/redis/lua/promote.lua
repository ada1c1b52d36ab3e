--[[ promote: a delayed job becomes waiting now, with ready_ms = now_ms, so it is
claimed as if it had become ready at now_ms; blocked workers are woken. Any other
state is left alone.

KEYS[1] delayed   KEYS[2] wait      KEYS[3] jobs      KEYS[4] marker
ARGV[1] job id    ARGV[2] now_ms

Returns: 1 when the job moved, 0 when it is not delayed or the queue holds no such job
Errors:  none
Atomic.
]]
--- @include "job"

local delayed, wait, jobs, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now = ARGV[1], tonumber(ARGV[2])
local job = job_load(jobs, id)
if job == nil or job.s ~= 'delayed' then
  return 0
end
redis.call('ZREM', delayed, seq_member(job, id))
job.s = 'waiting'
job.r = now
job_save(jobs, id, job)
push_waiting(wait, job, id)
wake(marker)
return 1
