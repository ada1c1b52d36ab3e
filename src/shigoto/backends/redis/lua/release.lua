--[[ release: give jobs back unfinished (worker shutdown). Each goes back to waiting in

KEYS[1] wait      KEYS[2] active    KEYS[3] jobs      KEYS[4] errors
KEYS[5] marker    KEYS[6] cancelled
ARGV[1] now_ms
ARGV[2] note: an AttemptError as JSON ("" = none)
ARGV[3..] pairs: job id, token

its old place (same priority, ready_ms and seq: ahead of everything enqueued after it),
its attempt not counted; `note` is appended to its history when given. A job whose
cancellation was requested while it ran ends cancelled instead (reason "cancelled",
the attempt counted).

Returns: one integer per pair: 1 released (or cancelled), 0 lease lost (nothing changed
         for that job)
Errors:  -2  more than 1000 leases in one call
         -3  malformed arguments (odd number of id/token entries)
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

local MAX_BATCH = 1000
if (#ARGV - 2) % 2 ~= 0 then
  return -3
end
if (#ARGV - 2) / 2 > MAX_BATCH then
  return -2
end
local wait, active, jobs, errors, marker, cancelled =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, note = tonumber(ARGV[1]), ARGV[2]
local out = {}
local any = false
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job = job_load(jobs, id)
  if holds(job, token) then
    redis.call('ZREM', active, id)
    if note ~= '' then
      append_error(errors, id, note)
    end
    job.t = nil
    job.l = nil
    if job.c then
      finish_cancelled(cancelled, jobs, job, id, now)
    else
      job.a = math.max(job.a - 1, 0)
      job.s = 'waiting'
      job_save(jobs, id, job)
      push_waiting(wait, job, id)
      any = true
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if any then
  wake(marker)
end
return out
