--[[ claim_tick_record: note a claimed tick in the schedule registry (the second half of
RedisBackend.claim_tick, on the registry's slot): where the schedule's tick state lives
now and the newest tick fired. An unknown schedule is registered with since_ms = now_ms.

KEYS[1] schedules (registry hash)    KEYS[2] schedule_names (zset, score 0)
ARGV[1] schedule name    ARGV[2] fire_ms    ARGV[3] queue    ARGV[4] job id
ARGV[5] now_ms

Returns: 1
Errors:  none
Atomic.
]]
local name, fire, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[5])
local raw = redis.call('HGET', KEYS[1], name)
local entry = raw and cmsgpack.unpack(raw) or {s = now}
if entry.f == nil or entry.f < fire then
  entry.f = fire
  entry.q = ARGV[3]
  entry.j = ARGV[4]
  entry.c = now
end
redis.call('HSET', KEYS[1], name, cmsgpack.pack(entry))
redis.call('ZADD', KEYS[2], 0, name)
return 1
