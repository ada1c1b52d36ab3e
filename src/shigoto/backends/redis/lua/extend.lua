--[[ extend: heartbeat; push each held lease to lease_until_ms.

A lease no longer held (expired and recovered, cancelled, removed, finished) is reported
and not revived.

KEYS[1] active    KEYS[2] jobs
ARGV[1] lease_until_ms
ARGV[2..] pairs: job id, token

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
local out = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job = job_load(jobs, id)
  if holds(job, token) then
    job.l = lease_until
    job_save(jobs, id, job)
    redis.call('ZADD', active, int(lease_until), id)
    out[#out + 1] = job.c and 2 or 1
  else
    out[#out + 1] = 0
  end
end
return out
