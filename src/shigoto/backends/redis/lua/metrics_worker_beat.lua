--[[ metrics_worker_beat: store a worker's liveness record and forget expired ones
(RedisBackend.worker_beat).

KEYS[1] workers (hash id -> info)    KEYS[2] workers_expiry (zset id -> expires_ms)
ARGV[1] worker id    ARGV[2] info (opaque bytes)    ARGV[3] expires_ms    ARGV[4] now_ms

Returns: number of expired records forgotten (at most 100 per call)
Errors:  none
Atomic.
]]
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return #expired
