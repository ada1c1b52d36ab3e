--[[ set_paused: pause (claims yield nothing) or resume a queue; resuming wakes blocked
workers.

KEYS[1] meta      KEYS[2] marker
ARGV[1] "1" to pause, "0" to resume

Returns: 1
Errors:  -3  malformed arguments (flag not "0"/"1")
Atomic.
]]
local flag = ARGV[1]
if flag == '1' then
  redis.call('HSET', KEYS[1], 'paused', '1')
elseif flag == '0' then
  redis.call('HDEL', KEYS[1], 'paused')
  redis.call('ZADD', KEYS[2], 0, 'w')
else
  return -3
end
return 1
