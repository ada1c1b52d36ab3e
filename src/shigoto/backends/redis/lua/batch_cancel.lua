--[[ batch_cancel: set a batch's cancel-requested flag (the core cancels its chunks).

KEYS[1] batch     KEYS[2] failed
ARGV[1] now_ms

Returns: {hash as a flat list, failed indices}, or nil when the batch is unknown
Errors:  none
Atomic.
]]
--- @include "batch"

if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
redis.call('HSET', KEYS[1], 'cr', 1, 'um', ARGV[1])
return batch_reply(KEYS[1], KEYS[2])
