--[[ enqueue: store jobs as waiting (or delayed when ready_ms > now_ms). A job whose id
already exists in the queue, or whose dedup key is held by a live job (or within its
hold time), is not stored: the existing job is reported instead.

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] jobs
KEYS[5] data      KEYS[6] marker    KEYS[7] dedup     KEYS[8] dedup_check
ARGV[1] now_ms
ARGV[2..] seven values per job (see includes/store.lua): id, priority, ready_ms,
          dedup_key ("" = none), dedup_held_until_ms, state (MessagePack, without its
          enqueue number), data (MessagePack payload and options)

Returns: a flat array, three entries per job in order: created (1 or 0), state name,
         id of the job that answers (the dedup key's holder when that key was held)
Errors:  -2  more than 1000 jobs in one call
         -3  malformed arguments (not seven values per job)
Atomic: the whole batch is one script run.
]]
--- @include "job"
--- @include "store"

local MAX_BATCH = 1000
local WIDTH = 7
if (#ARGV - 1) % WIDTH ~= 0 then
  return -3
end
local count = (#ARGV - 1) / WIDTH
if count > MAX_BATCH then
  return -2
end
local now = tonumber(ARGV[1])
local k = {
  meta = KEYS[1], wait = KEYS[2], delayed = KEYS[3], jobs = KEYS[4], data = KEYS[5],
  marker = KEYS[6], dedup = KEYS[7], dedup_check = KEYS[8],
}
local base = redis.call('HINCRBY', k.meta, 'seq', count) - count
local out = {}
local created_any = false
local with_dedup = false
for n = 1, count do
  if ARGV[2 + (n - 1) * WIDTH + 3] ~= '' then
    with_dedup = true
    break
  end
end
if with_dedup then
  -- dedup keys may refer to jobs stored earlier in this very batch: one at a time
  for n = 1, count do
    local created, state, id = store_job(k, ARGV, 2 + (n - 1) * WIDTH, now, base + n)
    out[#out + 1] = created
    out[#out + 1] = state
    out[#out + 1] = id
    created_any = created_any or created == 1
  end
else
  created_any = store_batch(k, ARGV, 2, count, now, base, out)
end
if created_any then
  wake(k.marker)
end
return out
