--[[ audit_append: append audit entries to the audit stream, oldest first.

KEYS[1] audit stream ({prefix}:audit, its own slot)
ARGV[1] approximate cap on the stream length (MAXLEN ~), 0: no cap
ARGV[2..] entries, each one MessagePack blob (opaque here)

Returns: the number of entries appended
Errors:  -2  more than 1000 entries in one call
Atomic: all entries of one call are appended together, in order. Only XADD touches
the stream (nothing here edits or deletes an entry; the cap trims the oldest).
]]

if #ARGV - 1 > 1000 then
  return -2
end
local cap = tonumber(ARGV[1])
for i = 2, #ARGV do
  if cap > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', 'e', ARGV[i])
  else
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  end
end
return #ARGV - 1
