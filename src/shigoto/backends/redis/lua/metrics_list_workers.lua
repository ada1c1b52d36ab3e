--[[ metrics_list_workers: liveness records not expired at now_ms (RedisBackend.list_workers).

KEYS[1] workers (hash)    KEYS[2] workers_expiry (zset)
ARGV[1] now_ms    ARGV[2] limit (at most 1000)

Returns: flat list {id, info, id, info, ...}
Errors:  -2 limit above 1000
Read-only.
]]
local limit = tonumber(ARGV[2])
if limit > 1000 then return -2 end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf', 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  local info = redis.call('HGET', KEYS[1], id)
  if info then
    out[#out + 1] = id
    out[#out + 1] = info
  end
end
return out
