--[[ batch_create: store a new, unsealed batch (an existing id is left untouched).

KEYS[1] batch     KEYS[2] index     KEYS[3] open
ARGV[1] id        ARGV[2] chunk job name   ARGV[3] created_ms   ARGV[4] definition

Returns: 1 when created, 0 when a batch with this id exists
Errors:  none
Atomic.
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'n', ARGV[2], 'cm', ARGV[3], 'um', ARGV[3],
  'd', ARGV[4], 'c', 0, 'x', 0, 'k', 0)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
