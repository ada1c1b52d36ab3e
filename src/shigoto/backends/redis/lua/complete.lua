--[[ complete: mark jobs completed with their results, then apply retention.

KEYS[1] active    KEYS[2] completed KEYS[3] jobs      KEYS[4] data
KEYS[5] errors    KEYS[6] progress  KEYS[7] result
ARGV[1] now_ms
ARGV[2..] triples: job id, token, result JSON ("" = no result)

Each job's remove_on_complete policy (rc/ra in its state) decides: count 0 removes the
job at once; otherwise the completed index is trimmed to the newest `count` and/or to
jobs younger than `age` (at most 1000 removals per rule and call).

Returns: one integer per job: 1 completed, 0 lease lost (nothing changed for that job).
Errors:  -2  more than 1000 jobs in one call
         -3  malformed arguments (entries not a multiple of three)
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

local MAX_BATCH = 1000
if (#ARGV - 1) % 3 ~= 0 then
  return -3
end
if (#ARGV - 1) / 3 > MAX_BATCH then
  return -2
end
local active, completed, jobs, result = KEYS[1], KEYS[2], KEYS[3], KEYS[7]
local hashes = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local now = tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 3 do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return {}
end
-- one read and a handful of writes for the whole batch, not a few calls per job
local packed = redis.call('HMGET', jobs, unpack(ids))
local out, policies, seen = {}, {}, {}
-- the completed index's time prefix, formatted once (job.fm is `now` for all)
local fin_prefix = string.format('%015d', now)
local finished, removed, job_args, index_args, result_args = {}, {}, {}, {}, {}
for n, id in ipairs(ids) do
  local token, value = ARGV[n * 3], ARGV[n * 3 + 1]
  local job = nil
  if packed[n] and not seen[id] then
    job = cmsgpack.unpack(packed[n])
  end
  if holds(job, token) then
    seen[id] = true
    finished[#finished + 1] = id
    if job.rc == 0 then
      removed[#removed + 1] = id
    else
      job.s = 'completed'
      job.fm = now
      job.t = nil
      job.l = nil
      job_args[#job_args + 1] = id
      job_args[#job_args + 1] = cmsgpack.pack(job)
      index_args[#index_args + 1] = 0
      index_args[#index_args + 1] = fin_member(job, id, fin_prefix)
      if value ~= '' then
        result_args[#result_args + 1] = id
        result_args[#result_args + 1] = value
      end
      if job.rc >= 0 or job.ra >= 0 then
        -- count -> set of ages: no key string built per job (0.5 us of Redis each)
        local ages = policies[job.rc]
        if not ages then
          ages = {}
          policies[job.rc] = ages
        end
        ages[job.ra] = true
      end
    end
    out[n] = 1
  else
    out[n] = 0
  end
end

if #finished > 0 then
  redis.call('ZREM', active, unpack(finished))
end
if #removed > 0 then
  for _, key in ipairs(hashes) do
    redis.call('HDEL', key, unpack(removed))
  end
end
if #job_args > 0 then
  redis.call('HSET', jobs, unpack(job_args))
  redis.call('ZADD', completed, unpack(index_args))
end
if #result_args > 0 then
  redis.call('HSET', result, PIN, '', unpack(result_args))  -- PIN: see includes/job.lua
end
for count, ages in pairs(policies) do
  for age in pairs(ages) do
    trim(completed, hashes, count, age, now)
  end
end
return out
