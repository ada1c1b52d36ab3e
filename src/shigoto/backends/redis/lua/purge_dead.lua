--[[ purge_dead: delete the listed jobs that are dead; others are left alone.

KEYS[1] dead      KEYS[2] jobs      KEYS[3] data      KEYS[4] errors
KEYS[5] progress  KEYS[6] result
ARGV[1..] job ids

Returns: the ids deleted, in the order given
Errors:  -2  more than 1000 ids in one call
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

if #ARGV > 1000 then
  return -2
end
local dead, jobs = KEYS[1], KEYS[2]
local hashes = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local deleted = {}
for _, id in ipairs(ARGV) do
  local job = job_load(jobs, id)
  if job ~= nil and job.s == 'dead' then
    redis.call('ZREM', dead, fin_member(job, id))
    forget(hashes, id)
    deleted[#deleted + 1] = id
  end
end
return deleted
