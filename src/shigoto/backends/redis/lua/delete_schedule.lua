--[[ delete_schedule: forget a schedule's registry entry and definition. Its tick state
in its queue's `ticks` hash is removed by the backend right after (another slot).

KEYS[1] schedules (registry hash)    KEYS[2] schedule_names (zset, score 0)
KEYS[3] schedule_defs
ARGV[1] schedule name

Returns: nil when the name is unknown, else the queue holding its tick state ("" none)
Errors:  none
Atomic.
]]
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return cmsgpack.unpack(raw).q or ''
