--[[ schedule_states: the registry's view of every schedule, sorted by name (by bytes).

KEYS[1] schedules (registry hash)    KEYS[2] schedule_names (zset, score 0)
KEYS[3] schedule_defs (hash: name -> definition bytes)
ARGV[1] limit (1..10000)

Returns: a flat array, three entries per schedule: name, registry entry (MessagePack
         {s since_ms, f last fire, q queue, j job id, c claimed ms}), definition or nil.
         The newest tick state is in the `ticks` hash of queue q (the backend reads it).
Errors:  -2  limit outside 1..10000
]]
local limit = tonumber(ARGV[1])
if limit == nil or limit < 1 or limit > 10000 then
  return -2
end
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[2], 0, limit - 1)) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGET', KEYS[1], name)
  out[#out + 1] = redis.call('HGET', KEYS[3], name)
end
return out
