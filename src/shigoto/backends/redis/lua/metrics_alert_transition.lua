--[[ metrics_alert_transition: compare-and-set one alert's state, and record the transition
(RedisBackend.alert_transition). Of several evaluators exactly one wins each transition.

KEYS[1] alerts (hash key -> state)    KEYS[2] alert_versions (hash key -> version)
KEYS[3] alert_history (list, newest first)
ARGV[1] alert key    ARGV[2] state (opaque bytes)    ARGV[3] expected version (0: none)
ARGV[4] note (opaque bytes; empty: no note)    ARGV[5] history length kept

Returns: 1 when stored, 0 when the version did not match
Errors:  none
Atomic.
]]
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if current ~= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], current + 1)
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
end
return 1
