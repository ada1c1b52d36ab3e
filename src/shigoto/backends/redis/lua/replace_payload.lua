--[[ replace_payload: compare-and-set the stored data (payload + options) of one job.

KEYS[1] jobs      KEYS[2] data
ARGV[1] job id    ARGV[2] the data as read (MessagePack)    ARGV[3] the new data

Returns: 1 replaced, 0 unchanged (no such job, active, or its data changed meanwhile)
Errors:  none
Atomic. Used by key rotation; an active job is left to finish under its old key.
]]
--- @include "job"

local job = job_load(KEYS[1], ARGV[1])
if job == nil or job.s == 'active' then
  return 0
end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
