--[[ counts: the number of jobs of one queue in every state, as one snapshot.

KEYS[1] wait      KEYS[2] delayed   KEYS[3] active    KEYS[4] completed
KEYS[5] dead      KEYS[6] cancelled
ARGV    none

Returns: six integers, in the order of KEYS.
Errors:  none
]]
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('ZCARD', key)
end
-- active: its jobs, not the pin that keeps it a skiplist (includes/job.lua), scored +inf
out[3] = redis.call('ZCOUNT', KEYS[3], '-inf', '(+inf')
return out
