--[[ batch_finish: finish a sealed batch whose chunks are all final and store its

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] jobs
KEYS[5] data      KEYS[6] marker    KEYS[7] dedup     KEYS[8] dedup_check
KEYS[9] batch     KEYS[10] open
ARGV[1] batch id  ARGV[2] now_ms    ARGV[3] outcome
ARGV[4] follow-up job id ("" = no follow-up)
ARGV[5..11] the follow-up job's seven values, as for enqueue.lua (when ARGV[4] ~= "")

follow-up job, exactly once: the `fm` field is the flag, set in the same step that
stores the job, so of two workers finishing the last two chunks at the same instant
(or a recovery sweep racing a worker) exactly one gets 1.

Returns: 1 when the batch was finished now, 0 otherwise (unknown, unsealed, chunks
         pending, or finished before)
Errors:  none
Atomic.
]]
--- @include "job"
--- @include "store"

local batch = KEYS[9]
local fields = redis.call('HMGET', batch, 'tc', 'c', 'x', 'k', 'fm', 'id')
if not fields[6] or not fields[1] or fields[5] then
  return 0
end
if tonumber(fields[2]) + tonumber(fields[3]) + tonumber(fields[4]) < tonumber(fields[1]) then
  return 0
end
local now = tonumber(ARGV[2])
redis.call('HSET', batch, 'fm', ARGV[2], 'um', ARGV[2], 'o', ARGV[3])
redis.call('ZREM', KEYS[10], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', batch, 'f', ARGV[4])
  local k = {
    meta = KEYS[1], wait = KEYS[2], delayed = KEYS[3], jobs = KEYS[4], data = KEYS[5],
    marker = KEYS[6], dedup = KEYS[7], dedup_check = KEYS[8],
  }
  local created = store_job(k, ARGV, 5, now, redis.call('HINCRBY', k.meta, 'seq', 1))
  if created == 1 then
    wake(k.marker)
  end
end
return 1
