--[[ redrive: move dead jobs back to waiting with attempts, stalls, reason, result,
progress, worker and cancellation flag reset; ready_ms becomes now_ms (enqueue order
kept). The error history is kept. Jobs not dead (or missing) are skipped.

KEYS[1] wait      KEYS[2] dead      KEYS[3] jobs      KEYS[4] progress
KEYS[5] result    KEYS[6] marker
ARGV[1] now_ms
ARGV[2..] job ids

Returns: the ids that moved, in the order given
Errors:  -2  more than 1000 ids in one call
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

if #ARGV - 1 > 1000 then
  return -2
end
local wait, dead, jobs, progress, result, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
local moved = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local job = job_load(jobs, id)
  if job ~= nil and job.s == 'dead' then
    redis.call('ZREM', dead, seq_member(job, id))
    job.s = 'waiting'
    job.a = 0
    job.st = 0
    job.r = now
    job.rs = nil
    job.fm = nil
    job.sm = nil
    job.w = nil
    job.c = nil
    job_save(jobs, id, job)
    redis.call('HDEL', progress, id)
    redis.call('HDEL', result, id)
    push_waiting(wait, job, id)
    moved[#moved + 1] = id
  end
end
if #moved > 0 then
  wake(marker)
end
return moved
