--[[ enqueue: store jobs as waiting (or delayed when ready_ms > now_ms); an id that
already exists in the queue is left untouched and reported with its current state.

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] jobs
KEYS[5] data      KEYS[6] marker
ARGV[1] now_ms
ARGV[2] JSON array, one entry per job:
        [id, priority, ready_ms, max_stalls, keep_completed_count, keep_completed_age_ms,
         keep_dead_count, keep_dead_age_ms]   (-1 = no limit)
ARGV[3..] the immutable MessagePack blob of each job, in the same order

Returns: a flat array, two entries per job in order: created (1 or 0), state name.
Errors:  -2  more than 1000 jobs in one call
         -3  malformed arguments (blob count differs from the job count)
Atomic: the whole batch is one script run.
]]
--- @include "job"

local MAX_BATCH = 1000
local now = tonumber(ARGV[1])
local specs = cjson.decode(ARGV[2])
if #specs > MAX_BATCH then
  return -2
end
if #ARGV ~= #specs + 2 then
  return -3
end

local meta, wait, delayed, jobs, data, marker =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local base = redis.call('HINCRBY', meta, 'seq', #specs) - #specs
local out = {}
local created_any = false

for i, spec in ipairs(specs) do
  local id = spec[1]
  if redis.call('HSETNX', data, id, ARGV[i + 2]) == 1 then
    local job = {
      p = spec[2], r = spec[3], q = base + i, a = 0, st = 0, ms = spec[4],
      rc = spec[5], ra = spec[6], fc = spec[7], fa = spec[8],
    }
    if job.r > now then
      job.s = 'delayed'
      redis.call('ZADD', delayed, int(job.r), seq_member(job, id))
    else
      job.s = 'waiting'
      push_waiting(wait, job, id)
    end
    job_save(jobs, id, job)
    out[#out + 1] = 1
    out[#out + 1] = job.s
    created_any = true
  else
    out[#out + 1] = 0
    out[#out + 1] = job_load(jobs, id).s
  end
end

if created_any then
  wake(marker)
end
return out
