--[[ batch_get: one batch.

KEYS[1] batch     KEYS[2] failed

Returns: {hash as a flat list, failed indices}, or nil when the batch is unknown
Errors:  none
Read-only.
]]
--- @include "batch"

if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
return batch_reply(KEYS[1], KEYS[2])
