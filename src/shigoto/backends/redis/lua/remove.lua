--[[ remove: delete a job in any state but active: its state, data, errors, progress and

KEYS[1] wait      KEYS[2] delayed   KEYS[3] completed KEYS[4] dead
KEYS[5] cancelled KEYS[6] jobs      KEYS[7] data      KEYS[8] errors
KEYS[9] progress  KEYS[10] result
ARGV[1] job id    ARGV[2] now_ms (unused: kept so every admin script takes it)

result, and its member of the index of its state, so counts drop at once. An active job
is refused (its worker holds the lease) and left untouched. A dedup key the job held
is left to the reaping in includes/store.lua (a removed holder counts as completed).

Returns: 1 when the job was deleted, 0 when it is active or the queue holds no such job
Errors:  none
Atomic.
]]
--- @include "job"

local wait, delayed, completed, dead, cancelled, jobs =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local hashes = {KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]}
local id = ARGV[1]
local job = job_load(jobs, id)
if job == nil or job.s == 'active' then
  return 0
end
if job.s == 'waiting' then
  redis.call('ZREM', wait, wait_member(job, id))
elseif job.s == 'delayed' then
  redis.call('ZREM', delayed, seq_member(job, id))
else
  local final = {completed = completed, dead = dead, cancelled = cancelled}
  local index = final[job.s]
  if index ~= nil and job.fm ~= nil then
    redis.call('ZREM', index, fin_member(job, id))
  end
end
forget(hashes, id)
return 1
