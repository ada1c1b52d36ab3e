--[[ claim_tick: claim one tick of a schedule and store its job, in one step, in the

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] jobs
KEYS[5] data      KEYS[6] marker    KEYS[7] dedup     KEYS[8] dedup_check
KEYS[9] ticks
ARGV[1] schedule name                ARGV[2] fire_ms   ARGV[3] now_ms
ARGV[4] floor_ms (-1 = none)
ARGV[5..11] the job's seven values, as for enqueue.lua (see includes/store.lua)

slot of the job's queue.

The tick state of a schedule lives in the `ticks` hash of the queue its jobs go to, so
"advance the tick" and "store the job" are one script on one Redis Cluster slot: of
several schedulers trying the same tick, exactly one sees it newer than the last and
stores the job. `floor_ms` is the last tick the schedule registry knows of (from any
queue), so a schedule whose queue changed does not fire an old tick again.

Returns: 1 when the tick was claimed (its job stored, or an existing job with its id
         kept), 0 when the tick is not newer than the last one claimed
Errors:  none
Atomic.
]]
--- @include "job"
--- @include "store"

local k = {
  meta = KEYS[1], wait = KEYS[2], delayed = KEYS[3], jobs = KEYS[4], data = KEYS[5],
  marker = KEYS[6], dedup = KEYS[7], dedup_check = KEYS[8],
}
local ticks = KEYS[9]
local name, fire, now, floor = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local raw = redis.call('HGET', ticks, name)
if (raw and cmsgpack.unpack(raw).f >= fire) or floor >= fire then
  return 0
end
redis.call('HSET', ticks, name, cmsgpack.pack({f = fire, j = ARGV[5], c = now}))
local created = store_job(k, ARGV, 5, now, redis.call('HINCRBY', k.meta, 'seq', 1))
if created == 1 then
  wake(k.marker)
end
return 1
