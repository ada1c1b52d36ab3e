--[[ recover_stalled: take back up to `limit` active jobs whose lease expired before

KEYS[1] wait      KEYS[2] active    KEYS[3] dead      KEYS[4] jobs
KEYS[5] errors    KEYS[6] marker
ARGV[1] now_ms    ARGV[2] limit (1..1000)

now_ms (lease_until_ms < now_ms).

Each one's stalls grows by one; past its max_stalls it goes dead with reason
"stalled_too_often" (attempts kept), otherwise waiting again in its old place with the
attempt not counted. A "Stalled" AttemptError is appended either way, and the token is
void from then on. Retention (remove_on_fail) is not applied, as in the SQLite backend.

Returns: a flat array, two entries per recovered job: id, new state ("waiting"/"dead")
Errors:  -2  limit outside 1..1000
Atomic per job (the whole batch is one script run).
]]
--- @include "job"

local wait, active, dead, jobs, errors, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > 1000 then
  return -2
end
local expired = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. int(now), 'LIMIT', 0, limit)
local out = {}
local any_waiting = false
for _, id in ipairs(expired) do
  local job = job_load(jobs, id)
  local worker = job.w
  local started = job.sm and int(job.sm) or 'null'
  append_error(errors, id, '{"attempt":' .. int(job.a) ..
    ',"error_type":"Stalled","message":' ..
    cjson.encode('lease expired: worker ' .. (worker or '?') ..
      ' stopped heartbeating (crashed, killed or blocked)') ..
    ',"traceback":"","worker_id":' .. cjson.encode(worker or '') ..
    ',"started_ms":' .. started .. ',"ended_ms":' .. int(now) .. '}')
  job.st = job.st + 1
  job.t = nil
  job.l = nil
  if job.st > job.ms then
    job.s = 'dead'
    job.rs = 'stalled_too_often'
    job.fm = now
    push_final(dead, job, id)
  else
    job.s = 'waiting'
    job.a = math.max(job.a - 1, 0)
    job.fm = nil
    push_waiting(wait, job, id)
    any_waiting = true
  end
  job_save(jobs, id, job)
  out[#out + 1] = id
  out[#out + 1] = job.s
end
if #expired > 0 then
  redis.call('ZREM', active, unpack(expired))
end
if any_waiting then
  wake(marker)
end
return out
