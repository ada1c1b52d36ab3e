--[[ promote_due: move up to `limit` delayed jobs whose time has come to waiting, in due
order (ready_ms, then enqueue order).

KEYS[1] delayed   KEYS[2] wait      KEYS[3] jobs      KEYS[4] marker
ARGV[1] now_ms    ARGV[2] limit (1..1000)

Returns: how many jobs moved
Errors:  -2  limit outside 1..1000
Atomic.
]]
--- @include "job"

local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > 1000 then
  return -2
end
local moved = promote(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), limit)
if moved > 0 then
  wake(KEYS[4])
end
return moved
