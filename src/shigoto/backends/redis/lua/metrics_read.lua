--[[ metrics_read: the contents of metric buckets of one queue (RedisBackend.read_metrics).

KEYS[1] .. KEYS[n] bucket hashes of one queue, in start order (at most 1440)
ARGV    none

Returns: for each key, its flat HGETALL reply (empty for a missing bucket)
Errors:  -2 more than 1440 keys
Read-only.
]]
if #KEYS > 1440 then return -2 end
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
