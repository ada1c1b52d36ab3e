--[[ batch_record: count chunks that reached a final state, each at most once.

KEYS[1] batch     KEYS[2] pending   KEYS[3] failed
ARGV[1] now_ms
ARGV[2..] pairs: chunk index, final state (completed | dead | cancelled)

Returns: {hash as a flat list, failed indices}, or nil when the batch is unknown
Errors:  -2  more than 1000 chunks in one call
         -3  malformed arguments (not pairs)
Atomic.
]]
--- @include "batch"

if (#ARGV - 1) % 2 ~= 0 then
  return -3
end
if (#ARGV - 1) / 2 > 1000 then
  return -2
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local counted = 0
for i = 2, #ARGV, 2 do
  counted = counted + batch_count(KEYS[1], KEYS[2], KEYS[3], ARGV[i], ARGV[i + 1])
end
if counted > 0 then
  redis.call('HSET', KEYS[1], 'um', ARGV[1])
end
return batch_reply(KEYS[1], KEYS[3])
