--[[ redrive: move dead jobs back with attempts, stalls, reason, result, progress,

KEYS[1] wait      KEYS[2] delayed   KEYS[3] dead      KEYS[4] jobs
KEYS[5] errors    KEYS[6] progress  KEYS[7] result    KEYS[8] marker
ARGV[1] now_ms    ARGV[2] run_at_ms ARGV[3] note: an AttemptError as JSON ("" = none)
ARGV[4..] job ids

worker and cancellation flag reset: waiting at ready_ms = now_ms, or delayed until
run_at_ms when that is later (enqueue order kept). The error history is kept, and
`note` (who redrove it) is appended when given. Jobs not dead (or missing) are skipped.

Returns: the ids that moved, in the order given
Errors:  -2  more than 1000 ids in one call
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

if #ARGV - 3 > 1000 then
  return -2
end
local wait, delayed, dead, jobs, errors, progress, result, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local now, note = tonumber(ARGV[1]), ARGV[3]
local run_at = math.max(tonumber(ARGV[2]), now)
local moved = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local job = job_load(jobs, id)
  if job ~= nil and job.s == 'dead' then
    redis.call('ZREM', dead, fin_member(job, id))
    job.a = 0
    job.st = 0
    job.rs = nil
    job.fm = nil
    job.sm = nil
    job.w = nil
    job.c = nil
    schedule_at(delayed, wait, job, id, run_at, now)
    job_save(jobs, id, job)
    redis.call('HDEL', progress, id)
    redis.call('HDEL', result, id)
    if note ~= '' then
      append_error(errors, id, note)
    end
    moved[#moved + 1] = id
  end
end
if #moved > 0 then
  wake(marker)
end
return moved
