--[[ audit_prune: delete audit stream items older than a stream id, oldest first.

KEYS[1] audit stream ({prefix}:audit)
KEYS[2] entry count ({prefix}:audit:count)
ARGV[1] exclusive upper bound: a stream id (server milliseconds) as text
ARGV[2] the most items to delete (1..1000)

Returns: the number of entries removed (an item holds one append call's entries)
Errors:  -2  limit outside 1..1000
Atomic; keeps the entry count that the cap of audit_append reads in step with the
stream (an XTRIM would not say how many entries the trimmed items held).
]]

local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > 1000 then
  return -2
end
-- '(<ms>-0': every item of an earlier millisecond (a bare '(<ms>' would include <ms>)
local items = redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[1] .. '-0', 'COUNT', limit)
local removed = 0
for _, item in ipairs(items) do
  local fields, n = item[2], 1
  for i = 1, #fields, 2 do
    if fields[i] == 'n' then
      n = tonumber(fields[i + 1])
    end
  end
  redis.call('XDEL', KEYS[1], item[1])
  removed = removed + n
end
if removed > 0 then
  local held = redis.call('DECRBY', KEYS[2], removed)
  if held < 0 then
    redis.call('SET', KEYS[2], 0)
  end
end
return removed
