--[[ register_schedules: start tracking schedules; a name not yet known gets
since_ms = now_ms, a known one is left untouched (the earliest registration wins).

KEYS[1] schedules (registry hash)    KEYS[2] schedule_names (zset, score 0)
ARGV[1] now_ms
ARGV[2..] schedule names

Returns: how many names were new
Errors:  -2  more than 1000 names in one call
Atomic.
]]
if #ARGV - 1 > 1000 then
  return -2
end
local now = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[1], ARGV[i], cmsgpack.pack({s = now}))
    redis.call('ZADD', KEYS[2], 0, ARGV[i])
    added = added + 1
  end
end
return added
