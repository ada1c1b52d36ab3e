--[[ get: one job, read atomically from every hash that holds a part of it.

KEYS[1] jobs      KEYS[2] data      KEYS[3] errors    KEYS[4] progress
KEYS[5] result
ARGV[1] job id

Returns: {state (MessagePack), data, errors JSON or nil, progress or nil, result or nil},
         or nil when the queue holds no such job.
Errors:  none
]]
local id = ARGV[1]
local state = redis.call('HGET', KEYS[1], id)
if not state then
  return false
end
return {
  state,
  redis.call('HGET', KEYS[2], id),
  redis.call('HGET', KEYS[3], id),
  redis.call('HGET', KEYS[4], id),
  redis.call('HGET', KEYS[5], id),
}
