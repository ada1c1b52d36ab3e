--[[ claim: lease up to `limit` ready jobs of one queue, best first.

Order: priority (higher first), then ready_ms, then enqueue order: exactly the order of
the `wait` index (see includes/job.lua). Due delayed jobs are promoted first (up to
max(limit, 1000), so a due high-priority job is never hidden behind earlier-due low
ones). A paused queue yields nothing.

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] active
KEYS[5] jobs      KEYS[6] data      KEYS[7] errors    KEYS[8] progress
KEYS[9] marker
ARGV[1] now_ms    ARGV[2] limit (1..1000)    ARGV[3] worker_id
ARGV[4] lease_until_ms                       ARGV[5] token prefix (random, per call)

Returns: {next_due_ms, then five entries per claimed job: id, state (MessagePack),
         data, errors JSON or nil, progress or nil}
         next_due_ms is the due time of the earliest delayed job (-1: none; also -1 for a
         paused queue), so an idle worker knows how long it may sleep.
Errors:  -2  limit outside 1..1000
A job whose stored state does not decode is not returned: it is left active with an
expired lease and max_stalls 0 (and a "CorruptRecord" entry), so recover_stalled
moves it to dead instead of the whole claim failing.
Atomic: two concurrent claims never return the same job. If jobs remain waiting after
the claim, the wake-up marker is set so another idle worker claims them.
]]
--- @include "job"

local MAX_CLAIM = 1000
local PROMOTE_ON_CLAIM = 1000
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > MAX_CLAIM then
  return -2
end
local worker, lease_until, token_prefix = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local meta, wait, delayed, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobs, data, errors, progress, marker = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

if redis.call('HGET', meta, 'paused') == '1' then
  return {-1}
end

local function earliest_due()
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  return #first > 0 and tonumber(first[2]) or -1
end
local next_due = earliest_due()
if next_due >= 0 and next_due <= now then
  promote(delayed, wait, jobs, now, math.max(limit, PROMOTE_ON_CLAIM))
  next_due = earliest_due()
end
local out = {next_due}

local popped = redis.call('ZPOPMIN', wait, limit)
if #popped == 0 then
  return out
end
local ids = {}
for i = 1, #popped, 2 do
  ids[#ids + 1] = id_of_wait(popped[i])
end
local packed = redis.call('HMGET', jobs, unpack(ids))
local states, job_args, active_args, corrupt = {}, {}, {}, {}
for n, id in ipairs(ids) do
  local until_ms = lease_until
  local ok, job = pcall(cmsgpack.unpack, packed[n] or '')
  if not ok or type(job) ~= 'table' or type(job.a) ~= 'number' then
    -- A damaged state (not written by these scripts): raising here would leave every
    -- job popped above out of `wait` and never active (lost). Instead it becomes an
    -- already expired lease with max_stalls 0, which recover_stalled turns dead.
    append_error(errors, id, '{"attempt":0,"error_type":"CorruptRecord","message":' ..
      cjson.encode('the stored job state could not be decoded') ..
      ',"traceback":"","worker_id":' .. cjson.encode(worker) ..
      ',"started_ms":null,"ended_ms":' .. int(now) .. '}')
    job = {s = 'waiting', n = '?', cm = now, p = 0, r = now, q = 0, a = 0, st = 0, ms = 0}
    until_ms = now - 1
    corrupt[n] = true
  end
  job.s = 'active'
  job.t = token_prefix .. n
  job.w = worker
  job.l = until_ms
  job.sm = now
  job.a = job.a + 1
  states[n] = cmsgpack.pack(job)
  job_args[#job_args + 1] = id
  job_args[#job_args + 1] = states[n]
  active_args[#active_args + 1] = int(until_ms)
  active_args[#active_args + 1] = id
end
redis.call('HSET', jobs, unpack(job_args))
redis.call('ZADD', active, unpack(active_args))
local blobs = redis.call('HMGET', data, unpack(ids))
local errs = redis.call('HMGET', errors, unpack(ids))
local progs = redis.call('HMGET', progress, unpack(ids))
for n, id in ipairs(ids) do
  if not corrupt[n] then  -- a damaged job is not returned: nothing to run
    out[#out + 1] = id
    out[#out + 1] = states[n]
    out[#out + 1] = blobs[n]
    out[#out + 1] = errs[n]
    out[#out + 1] = progs[n]
  end
end

-- a full batch may have left jobs behind: wake the next idle worker for them
if #ids == limit and redis.call('ZCARD', wait) > 0 then
  wake(marker)
end
return out
