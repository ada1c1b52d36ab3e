--[[ save_schedule: create or replace the stored definition of a run-time schedule; its
tick state and since_ms are kept (a new name gets since_ms = now_ms).

KEYS[1] schedules (registry hash)    KEYS[2] schedule_names (zset, score 0)
KEYS[3] schedule_defs
ARGV[1] schedule name    ARGV[2] definition (opaque bytes)    ARGV[3] now_ms

Returns: 1
Errors:  none
Atomic.
]]
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack({s = tonumber(ARGV[3])}))
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
