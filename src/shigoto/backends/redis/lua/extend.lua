--[[ extend: heartbeat; push each held lease to lease_until_ms.

KEYS[1] active    KEYS[2] jobs
ARGV[1] lease_until_ms
ARGV[2..] pairs: job id, token

A lease no longer held (expired and recovered, cancelled, removed, finished) is reported
and not revived.

Returns: one integer per pair: 0 not held, 1 held, 2 held and cancellation requested.
Errors:  -2  more than 1000 leases in one call
         -3  malformed arguments (odd number of id/token entries)
Atomic per lease (the whole batch is one script run).
]]
--- @include "job"

local MAX_BATCH = 1000
if (#ARGV - 1) % 2 ~= 0 then
  return -3
end
if (#ARGV - 1) / 2 > MAX_BATCH then
  return -2
end
local active, jobs = KEYS[1], KEYS[2]
local lease_until = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return {}
end
local packed = redis.call('HMGET', jobs, unpack(ids))
local out, job_args, active_args = {}, {}, {}
for n, id in ipairs(ids) do
  local job = packed[n] and cmsgpack.unpack(packed[n]) or nil
  if holds(job, ARGV[n * 2 + 1]) then
    job.l = lease_until
    job_args[#job_args + 1] = id
    job_args[#job_args + 1] = cmsgpack.pack(job)
    active_args[#active_args + 1] = int(lease_until)
    active_args[#active_args + 1] = id
    out[n] = job.c and 2 or 1
  else
    out[n] = 0
  end
end
if #job_args > 0 then
  redis.call('HSET', jobs, unpack(job_args))
  redis.call('ZADD', active, unpack(active_args))
end
return out
