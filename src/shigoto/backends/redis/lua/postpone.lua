--[[ postpone: give a job back for later without counting its attempt (the handler

KEYS[1] wait      KEYS[2] delayed   KEYS[3] active    KEYS[4] jobs
KEYS[5] marker    KEYS[6] cancelled KEYS[7] limits
ARGV[1] job id    ARGV[2] token     ARGV[3] run_at_ms ARGV[4] now_ms
ARGV[5] hold: "1" or "0"

raised RateLimited): delayed until run_at_ms (waiting when that time has come), its
attempt not counted, the lease void. With hold, the job's group (when the queue has a
group rate limit) or else the whole queue yields no claims before run_at_ms (claim.lua
reads `h:<group>` / `hu` of `limits`; a later hold wins). A job whose cancellation was
requested while it ran ends cancelled instead (reason "cancelled").

Returns: 1 (now delayed), 2 (now waiting) or 3 (cancelled)
Errors:  -1  lease lost (no such job, not active, or another token holds it)
         -3  malformed arguments (a time not a number, hold not "0"/"1")
Atomic. Wakes blocked workers when the job is waiting again.
]]
--- @include "job"

local wait, delayed, active, jobs, marker, cancelled, limits =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local id, token = ARGV[1], ARGV[2]
local run_at, now, hold = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if run_at == nil or now == nil or (hold ~= '1' and hold ~= '0') then
  return -3
end
local job = job_load(jobs, id)
if not holds(job, token) then
  return -1
end
redis.call('ZREM', active, id)
job.t = nil
job.l = nil
if job.c then
  finish_cancelled(cancelled, jobs, job, id, now)
  return 3
end
job.a = math.max(job.a - 1, 0)
job.r = run_at
local outcome = schedule_at(delayed, wait, job, id, run_at, now)
job_save(jobs, id, job)
if hold == '1' and run_at > now then
  local field = 'hu'
  if type(job.g) == 'string' and redis.call('HEXISTS', limits, 'gm') == 1 then
    field = 'h:' .. job.g
  end
  local current = tonumber(redis.call('HGET', limits, field))
  if current == nil or current < run_at then
    redis.call('HSET', limits, field, int(run_at))
  end
end
wake(marker)
return outcome
