--[[ audit_append: append one call's audit entries to the audit stream, as one item.

KEYS[1] audit stream ({prefix}:audit, its own slot)
KEYS[2] entry count ({prefix}:audit:count, a string: entries the stream holds)
ARGV[1] cap on the entries kept (0: no cap)
ARGV[2] number of entries in ARGV[3] (1..1000)
ARGV[3] the entries, oldest first: one MessagePack array of entry maps (opaque here)

Returns: the number of entries appended
Errors:  -2  more than 1000 entries in one call
         -3  malformed arguments (no entries)
Atomic: all entries of one call are appended together, in order, as the fields
`n` (count) and `b` (the array) of one stream item: one XADD for a whole batch
instead of one per entry, which is what made the trail cost a worker a third of its
throughput. Items written before that hold one entry each, in the field `e`.
Over the cap, the oldest items are deleted (at most TRIM_ITEMS per call, so the work
per call stays bounded; later calls finish it). Nothing else edits or deletes an item.
]]

local MAX_BATCH = 1000
local TRIM_ITEMS = 100
local cap, count = tonumber(ARGV[1]), tonumber(ARGV[2])
if count == nil or count < 1 or ARGV[3] == nil then
  return -3
end
if count > MAX_BATCH then
  return -2
end
redis.call('XADD', KEYS[1], '*', 'n', count, 'b', ARGV[3])
local held = redis.call('INCRBY', KEYS[2], count)
if cap > 0 then
  local trimmed = 0
  while held > cap and trimmed < TRIM_ITEMS do
    local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
    if #oldest == 0 then
      break
    end
    local id, fields = oldest[1][1], oldest[1][2]
    local n = 1
    for i = 1, #fields, 2 do
      if fields[i] == 'n' then
        n = tonumber(fields[i + 1])
      end
    end
    redis.call('XDEL', KEYS[1], id)
    held = redis.call('DECRBY', KEYS[2], n)
    trimmed = trimmed + 1
  end
  if held < 0 then  -- items older than the counter were never counted
    redis.call('SET', KEYS[2], 0)
  end
end
return count
