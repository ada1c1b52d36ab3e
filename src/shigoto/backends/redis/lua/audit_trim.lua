--[[ audit_trim: delete the oldest audit items while the stream holds more entries than
the cap (standalone Redis appends with a plain XADD, then calls this when the count it
got back is over the cap).

KEYS[1] audit stream ({prefix}:audit)
KEYS[2] entry count ({prefix}:audit:count)
ARGV[1] cap on the entries kept (1 or more)

Returns: the number of items deleted (at most 100 per call: the caller's next append
finds the count still over and calls again)
Errors:  -3  malformed arguments (no cap)
]]
--- @include "audit"

local cap = tonumber(ARGV[1])
if cap == nil or cap < 1 then
  return -3
end
return trim_audit(KEYS[1], KEYS[2], cap, tonumber(redis.call('GET', KEYS[2]) or '0'))
