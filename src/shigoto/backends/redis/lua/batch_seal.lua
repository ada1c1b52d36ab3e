--[[ batch_seal: record that every chunk of the batch is enqueued.

KEYS[1] batch     KEYS[2] failed
ARGV[1] total chunks   ARGV[2] total items   ARGV[3] now_ms

Returns: {hash as a flat list, failed indices} (see includes/batch.lua), or nil when
         the batch is unknown
Errors:  none
Atomic.
]]
--- @include "batch"

if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
redis.call('HSET', KEYS[1], 'tc', ARGV[1], 'ti', ARGV[2], 'um', ARGV[3])
return batch_reply(KEYS[1], KEYS[2])
