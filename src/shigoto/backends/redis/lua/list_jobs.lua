--[[ list_jobs: jobs of one queue in one state, one page.

KEYS[1] the state's index (wait, delayed, active, completed, dead or cancelled)
KEYS[2] jobs      KEYS[3] data      KEYS[4] errors    KEYS[5] progress
KEYS[6] result
ARGV[1] state name    ARGV[2] offset (>= 0)    ARGV[3] limit (1..1000)

waiting and delayed are listed in run order; completed, dead and cancelled newest first
(finished_ms, then enqueue order, descending); active by started_ms, newest first (read
from at most the 10,000 active jobs of the queue with the earliest lease expiry, which is
all of them for any realistic number of workers).

Returns: a flat array, six entries per job: id, state (MessagePack), data, errors JSON
         or nil, progress or nil, result or nil
Errors:  -2  limit outside 1..1000
         -3  malformed arguments (unknown state, negative offset)
]]
--- @include "job"

local MAX_ACTIVE_SCAN = 10000
local index, jobs = KEYS[1], KEYS[2]
local state, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if limit == nil or limit < 1 or limit > 1000 then
  return -2
end
if offset == nil or offset < 0 then
  return -3
end
local last = offset + limit - 1
local ids = {}
if state == 'waiting' then
  for _, member in ipairs(redis.call('ZRANGE', index, offset, last)) do
    ids[#ids + 1] = id_of_wait(member)
  end
elseif state == 'delayed' then
  for _, member in ipairs(redis.call('ZRANGE', index, offset, last)) do
    ids[#ids + 1] = id_of_seq(member)
  end
elseif state == 'completed' or state == 'dead' or state == 'cancelled' then
  for _, member in ipairs(redis.call('ZREVRANGE', index, offset, last)) do
    ids[#ids + 1] = id_of_fin(member)
  end
elseif state == 'active' then
  local rows = {}
  -- below +inf: the index's pin is no job (includes/job.lua)
  local leased = redis.call('ZRANGE', index, '-inf', '(+inf', 'BYSCORE', 'LIMIT', 0, MAX_ACTIVE_SCAN)
  for _, id in ipairs(leased) do
    local job = job_load(jobs, id)
    rows[#rows + 1] = {id, job.sm or 0, job.q}
  end
  table.sort(rows, function(a, b)
    if a[2] ~= b[2] then
      return a[2] > b[2]
    end
    return a[3] > b[3]
  end)
  for i = offset + 1, math.min(offset + limit, #rows) do
    ids[#ids + 1] = rows[i][1]
  end
else
  return -3
end

local out = {}
if #ids == 0 then
  return out
end
local columns = {}
for k = 2, 6 do
  columns[k] = redis.call('HMGET', KEYS[k], unpack(ids))
end
for n, id in ipairs(ids) do
  out[#out + 1] = id
  for k = 2, 6 do
    out[#out + 1] = columns[k][n]
  end
end
return out
