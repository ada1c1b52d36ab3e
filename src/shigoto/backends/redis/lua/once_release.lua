--[[ once_release: give up `owner`'s claim on `key` (its effect failed) so another
attempt may claim it at once. A done record or another owner's claim is left alone.

KEYS[1] once      KEYS[2] once_exp
ARGV[1] key       ARGV[2] owner

Returns: 1 when a claim was released, else 0
Errors:  none
Atomic.
]]
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local rec = cmsgpack.unpack(raw)
if rec.o ~= ARGV[2] or rec.d ~= nil then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
