--[[ cancel: a waiting or delayed job becomes cancelled (finished_ms = now_ms, reason
"cancelled"); an active job is flagged (its worker learns it at the next heartbeat) and
stays active; a finished job is left alone.

KEYS[1] wait      KEYS[2] delayed   KEYS[3] cancelled KEYS[4] jobs
ARGV[1] job id    ARGV[2] now_ms

Returns: the job's state afterwards, or nil when the queue holds no such job.
Errors:  none
Atomic.
]]
--- @include "job"

local wait, delayed, cancelled, jobs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now = ARGV[1], tonumber(ARGV[2])
local job = job_load(jobs, id)
if job == nil then
  return false
end
if job.s == 'waiting' or job.s == 'delayed' then
  if job.s == 'waiting' then
    redis.call('ZREM', wait, wait_member(job, id))
  else
    redis.call('ZREM', delayed, seq_member(job, id))
  end
  job.s = 'cancelled'
  job.fm = now
  job.rs = 'cancelled'
  job_save(jobs, id, job)
  push_final(cancelled, job, id)
elseif job.s == 'active' and not job.c then
  job.c = true
  job_save(jobs, id, job)
end
return job.s
