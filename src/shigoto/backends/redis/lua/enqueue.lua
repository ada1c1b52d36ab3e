--[[ enqueue: store jobs as waiting (or delayed when ready_ms > now_ms). A job whose id
already exists in the queue, or whose dedup key is held by a live job (or within its
hold time), is not stored: the existing job is reported instead.

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] jobs
KEYS[5] data      KEYS[6] marker    KEYS[7] dedup     KEYS[8] dedup_check
ARGV[1] now_ms
ARGV[2] values per job: 7, or 5 when no job of the call has a dedup key
ARGV[3..] the values of each job (see includes/store.lua): id, priority, ready_ms,
          state (MessagePack, without its enqueue number), data (MessagePack payload
          and options), then with 7: dedup_key ("" = none), dedup_held_until_ms

Returns: {1} when every job was stored, as waiting (the usual bulk add: the caller
         knows their ids); otherwise 0 followed by three entries per job in order:
         created (1 or 0), state name, id of the job that answers (the dedup key's
         holder when that key was held)
Errors:  -2  more than 1000 jobs in one call
         -3  malformed arguments (not 5 or 7 values per job)
Atomic: the whole batch is one script run.
]]
--- @include "job"
--- @include "store"

local MAX_BATCH = 1000
local width = tonumber(ARGV[2])
if (width ~= 5 and width ~= 7) or (#ARGV - 2) % width ~= 0 then
  return -3
end
local count = (#ARGV - 2) / width
if count > MAX_BATCH then
  return -2
end
local now = tonumber(ARGV[1])
local k = {
  meta = KEYS[1], wait = KEYS[2], delayed = KEYS[3], jobs = KEYS[4], data = KEYS[5],
  marker = KEYS[6], dedup = KEYS[7], dedup_check = KEYS[8],
}
local base = redis.call('HINCRBY', k.meta, 'seq', count) - count
local out = {0}
local created_any, all_waiting = false, false
local with_dedup = false
if width == 7 then
  for n = 1, count do
    if ARGV[3 + (n - 1) * width + 5] ~= '' then
      with_dedup = true
      break
    end
  end
end
if with_dedup then
  -- dedup keys may refer to jobs stored earlier in this very batch: one at a time
  for n = 1, count do
    local created, state, id = store_job(k, ARGV, 3 + (n - 1) * width, now, base + n)
    out[#out + 1] = created
    out[#out + 1] = state
    out[#out + 1] = id
    created_any = created_any or created == 1
  end
else
  created_any, all_waiting = store_batch(k, ARGV, 3, width, count, now, base, out)
end
if created_any then
  wake(k.marker)
end
if all_waiting then
  return {1}
end
return out
