--[[ Storing a new job, shared by enqueue.lua and claim_tick.lua (needs "job").

k:    table of keys {meta, wait, delayed, jobs, data, marker, dedup, dedup_check}
spec: {id, name, priority, ready_ms, created_ms, max_stalls,
       keep_completed_count, keep_completed_age_ms, keep_dead_count, keep_dead_age_ms,
       dedup_key ("" = none), dedup_held_until_ms}     (-1 = no limit)
]]

local DEDUP_REAP = 20
local DEDUP_RECHECK_MS = 60000
local LIVE = {waiting = true, delayed = true, active = true}

-- The job holding `key` right now (its id and state), or nil when the key is free: held
-- while its job is live, or until its hold time (a removed job counts as completed).
local function dedup_holder(k, key, now)
  local raw = redis.call('HGET', k.dedup, key)
  if not raw then
    return nil
  end
  local rec = cmsgpack.unpack(raw)
  local holder = job_load(k.jobs, rec.j)
  local state = holder and holder.s
  if (state and LIVE[state]) or now < rec.h then
    return rec.j, state or 'completed'
  end
  return nil
end

-- Make `id` the holder of `key`; first reap a few keys whose hold ran out (a key whose
-- job is still live is looked at again later).
local function take_dedup_key(k, key, id, held_until, now)
  local stale = redis.call(
    'ZRANGEBYSCORE', k.dedup_check, '-inf', '(' .. int(now), 'LIMIT', 0, DEDUP_REAP)
  for _, old in ipairs(stale) do
    local raw = redis.call('HGET', k.dedup, old)
    local holder = raw and job_load(k.jobs, cmsgpack.unpack(raw).j)
    if holder and LIVE[holder.s] then
      redis.call('ZADD', k.dedup_check, int(now + DEDUP_RECHECK_MS), old)
    else
      redis.call('HDEL', k.dedup, old)
      redis.call('ZREM', k.dedup_check, old)
    end
  end
  redis.call('HSET', k.dedup, key, cmsgpack.pack({j = id, h = held_until}))
  redis.call('ZADD', k.dedup_check, int(held_until), key)
end

-- Store one job with enqueue number `seq`. Returns created (1/0), state, and the id of
-- the job that answers (the dedup key's holder when that key is held).
local function store_job(k, spec, blob, now, seq)
  local id, dedup_key = spec[1], spec[11]
  if dedup_key ~= '' then
    local holder, state = dedup_holder(k, dedup_key, now)
    if holder then
      return 0, state, holder
    end
  end
  if redis.call('HSETNX', k.data, id, blob) == 0 then
    return 0, job_load(k.jobs, id).s, id
  end
  local job = {
    n = spec[2], p = spec[3], r = spec[4], cm = spec[5], q = seq, a = 0, st = 0,
    ms = spec[6], rc = spec[7], ra = spec[8], fc = spec[9], fa = spec[10],
  }
  if job.r > now then
    job.s = 'delayed'
    redis.call('ZADD', k.delayed, int(job.r), seq_member(job, id))
  else
    job.s = 'waiting'
    push_waiting(k.wait, job, id)
  end
  job_save(k.jobs, id, job)
  if dedup_key ~= '' then
    take_dedup_key(k, dedup_key, id, spec[12], now)
  end
  return 1, job.s, id
end
