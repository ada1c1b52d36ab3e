--[[ metrics_counts_by_name: how many jobs of each name one queue holds in the states
waiting, delayed, active and dead, reading at most ARGV[1] members of each index.

KEYS[1] jobs      KEYS[2] wait      KEYS[3] delayed   KEYS[4] active
KEYS[5] dead
ARGV[1] limit: most members read per index (>= 1)

Returns: {complete, name, state, count, name, state, count, ...}; complete is 1 when
         every index held at most `limit` members, else 0 (the split then covers only
         the first `limit` members of the longer indexes).
Errors:  -3 limit not a positive integer
Read-only.
]]
--- @include "job"

local limit = tonumber(ARGV[1])
if not limit or limit < 1 or limit ~= math.floor(limit) then
  return -3
end
local states = {
  {'waiting', KEYS[2], id_of_wait},
  {'delayed', KEYS[3], id_of_seq},
  {'active', KEYS[4], function(member) return member end},
  {'dead', KEYS[5], id_of_fin},
}
local complete = 1
local out = {0}
for _, entry in ipairs(states) do
  local state, key, id_of = entry[1], entry[2], entry[3]
  -- active counts its jobs, not its pin (includes/job.lua); the pin, last, is read
  -- with them when they are fewer than `limit`, and names no job
  local size = state == 'active' and count_active(key) or redis.call('ZCARD', key)
  if size > limit then
    complete = 0
  end
  local members = redis.call('ZRANGE', key, 0, limit - 1)
  local per_name = {}
  local names = {}
  for _, member in ipairs(members) do
    local job = job_load(KEYS[1], id_of(member))
    if job then
      local name = job.n
      if per_name[name] == nil then
        per_name[name] = 0
        names[#names + 1] = name
      end
      per_name[name] = per_name[name] + 1
    end
  end
  for _, name in ipairs(names) do
    out[#out + 1] = name
    out[#out + 1] = state
    out[#out + 1] = per_name[name]
  end
end
out[1] = complete
return out
