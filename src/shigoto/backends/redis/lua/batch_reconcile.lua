--[[ batch_reconcile: look at up to `limit` pending chunks' jobs and count those already

KEYS[1] batch     KEYS[2] pending   KEYS[3] failed   KEYS[4] jobs (the queue's)
ARGV[1] now_ms    ARGV[2] limit (1..1000)   ARGV[3] batch id

final (a worker died between finishing a chunk and reporting it, or a chunk was
cancelled or dead-lettered outside a worker). A chunk job no longer stored counts as
completed (removed by retention).

Returns: {hash as a flat list, failed indices}, or nil when the batch is unknown
Errors:  -2  limit outside 1..1000
Atomic.
]]
--- @include "job"
--- @include "batch"

local limit = tonumber(ARGV[2])
if limit < 1 or limit > 1000 then
  return -2
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local counted = 0
for _, idx in ipairs(redis.call('SRANDMEMBER', KEYS[2], limit)) do
  local job = job_load(KEYS[4], ARGV[3] .. ':' .. idx)
  local state = job and job.s or 'completed'
  counted = counted + batch_count(KEYS[1], KEYS[2], KEYS[3], idx, state)
end
if counted > 0 then
  redis.call('HSET', KEYS[1], 'um', ARGV[1])
end
return batch_reply(KEYS[1], KEYS[3])
