--[[ audit_append: append one call's audit entries to the audit stream, as one item.

KEYS[1] audit stream ({prefix}:audit, its own slot)
KEYS[2] entry count ({prefix}:audit:count, a string: entries the stream holds)
ARGV[1] cap on the entries kept (0: no cap)
ARGV[2] number of entries in ARGV[3] (1..1000)
ARGV[3] the entries, oldest first, as one MessagePack array (opaque here)
ARGV[4] the field that holds it: `b` (an array of entry maps) or `g` (an array of
        groups of entries alike but for their job ids); `b` when absent

Run on a Redis Cluster only: standalone Redis appends with a plain MULTI / XADD /
INCRBY / EXEC and calls audit_trim.lua only when over the cap, since a script pays
about 1 ns per byte of its arguments (210 us for a batch of 1,000 entries) before its
first line runs.

Returns: the number of entries appended
Errors:  -2  more than 1000 entries in one call
         -3  malformed arguments (no entries)
Atomic: all entries of one call are appended together, in order, as the fields
`n` (count) and `b` or `g` (the array) of one stream item: one XADD for a whole batch
instead of one per entry, which is what made the trail cost a worker a third of its
throughput. Over the cap, the oldest items are deleted (includes/audit.lua).
Nothing else edits or deletes an item.
]]
--- @include "audit"

local MAX_BATCH = 1000
local cap, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local field = ARGV[4] or 'b'
if count == nil or count < 1 or ARGV[3] == nil or (field ~= 'b' and field ~= 'g') then
  return -3
end
if count > MAX_BATCH then
  return -2
end
redis.call('XADD', KEYS[1], '*', 'n', count, field, ARGV[3])
local held = redis.call('INCRBY', KEYS[2], count)
if cap > 0 then
  trim_audit(KEYS[1], KEYS[2], cap, held)
end
return count
