--[[ metrics_worker_gone: forget one worker's liveness record (RedisBackend.worker_gone).

KEYS[1] workers (hash)    KEYS[2] workers_expiry (zset)
ARGV[1] worker id

Returns: 1 when a record was removed, else 0
Errors:  none
Atomic.
]]
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
