--[[ complete: mark jobs completed with their results, then apply retention.

Each job's remove_on_complete policy (rc/ra in its state) decides: count 0 removes the
job at once; otherwise the completed index is trimmed to the newest `count` and/or to
jobs younger than `age` (at most 1000 removals per rule and call).

KEYS[1] active    KEYS[2] completed KEYS[3] jobs      KEYS[4] data
KEYS[5] errors    KEYS[6] progress  KEYS[7] result
ARGV[1] now_ms
ARGV[2..] triples: job id, token, result JSON ("" = no result)

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
local active, completed, jobs = KEYS[1], KEYS[2], KEYS[3]
local hashes = {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}
local result = KEYS[7]
local now = tonumber(ARGV[1])
local out = {}
local policies = {}
local removed = {}

for i = 2, #ARGV, 3 do
  local id, token, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local job = job_load(jobs, id)
  if holds(job, token) then
    removed[#removed + 1] = id
    if job.rc == 0 then
      forget(hashes, id)
    else
      job.s = 'completed'
      job.fm = now
      job.t = nil
      job.l = nil
      job_save(jobs, id, job)
      if value ~= '' then
        redis.call('HSET', result, id, value)
      end
      push_final(completed, job, id)
      if job.rc >= 0 or job.ra >= 0 then
        policies[job.rc .. ':' .. job.ra] = {job.rc, job.ra}
      end
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end

if #removed > 0 then
  redis.call('ZREM', active, unpack(removed))
end
for _, policy in pairs(policies) do
  trim(completed, hashes, policy[1], policy[2], now)
end
return out
