--[[ Storing a new job, shared by enqueue.lua and claim_tick.lua (needs "job").

k:    table of keys {meta, wait, delayed, jobs, data, marker, dedup, dedup_check}
Each job arrives as seven values (ARGV, flat, see enqueue.lua):
  id, priority, ready_ms,
  state: its MessagePack state map without the enqueue number `q` (records.py packs it
         with a header that counts one more entry; store_job appends "q" = seq),
  data:  its MessagePack payload and options (never decoded here),
  dedup_key ("" = none), dedup_held_until_ms
or as the first five of them when no job of the call has a dedup key (store_batch).
The state already says "waiting" or "delayed" (ready_ms > now_ms), decided by the same
rule as here, so the job's index always matches its state.
]]

local DEDUP_REAP = 20
local DEDUP_RECHECK_MS = 60000
local LIVE = {waiting = true, delayed = true, active = true}
local SEQ_KEY = '\161q'  -- MessagePack fixstr "q"

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

-- Store the job whose seven values start at argv[i], with enqueue number `seq`.
-- Returns created (1/0), state, and the id of the job that answers (the dedup key's
-- holder when that key is held).
local function store_job(k, argv, i, now, seq)
  local id, dedup_key = argv[i], argv[i + 5]
  if dedup_key ~= '' then
    local holder, state = dedup_holder(k, dedup_key, now)
    if holder then
      return 0, state, holder
    end
  end
  if redis.call('HSETNX', k.data, id, argv[i + 4]) == 0 then
    return 0, job_load(k.jobs, id).s, id
  end
  local ready = tonumber(argv[i + 2])
  local state
  if ready > now then
    state = 'delayed'
    redis.call('ZADD', k.delayed, argv[i + 2], string.format('%015d', seq) .. id)
  else
    state = 'waiting'
    redis.call('ZADD', k.wait, int(-tonumber(argv[i + 1])),
      string.format('%015d%015d', ready, seq) .. id)
  end
  redis.call('HSET', k.jobs, PIN, '', id, argv[i + 3] .. SEQ_KEY .. cmsgpack.pack(seq))
  redis.call('HSET', k.data, PIN, '')  -- never a listpack (includes/job.lua)
  if dedup_key ~= '' then
    take_dedup_key(k, dedup_key, id, tonumber(argv[i + 6]), now)
  end
  return 1, state, id
end

-- Store `count` jobs whose values start at argv[first], `width` values each (5 or 7),
-- none with a dedup key, with enqueue numbers base + 1 .. base + count: the same
-- outcome as store_job for each in turn, in four writes for the whole batch instead of
-- three per job. Returns whether any job was created, and whether every one was, as
-- waiting. Only if not, created, state and id of each job are appended to `out`: a
-- bulk add's reply is then one value instead of three per job, which cost Redis and
-- the producer about 0.4 us per job to write and read.
local function store_batch(k, argv, first, width, count, now, base, out)
  local ids = {}
  for n = 1, count do
    ids[n] = argv[first + (n - 1) * width]
  end
  local existing = redis.call('HMGET', k.data, unpack(ids))
  local seen = {}
  -- the jobs of a batch mostly share their priority and ready time: each distinct one
  -- is formatted once (0.25 us of Redis per job)
  local scores, prefixes = {}, {}
  local data_args, job_args, wait_args, delayed_args = {}, {}, {}, {}
  local plain = true  -- every job so far created, as waiting: nothing in `out` yet
  local function answer(n, created, state)
    if plain then
      plain = false
      for m = 1, n - 1 do
        out[#out + 1] = 1
        out[#out + 1] = 'waiting'
        out[#out + 1] = ids[m]
      end
    end
    out[#out + 1] = created
    out[#out + 1] = state
    out[#out + 1] = ids[n]
  end
  for n = 1, count do
    local i = first + (n - 1) * width
    local id = ids[n]
    if existing[n] then
      answer(n, 0, job_load(k.jobs, id).s)
    elseif seen[id] then
      answer(n, 0, seen[id])
    else
      local seq = base + n
      local ready = tonumber(argv[i + 2])
      local state
      if ready > now then
        state = 'delayed'
        delayed_args[#delayed_args + 1] = argv[i + 2]
        delayed_args[#delayed_args + 1] = string.format('%015d', seq) .. id
      else
        state = 'waiting'
        local priority = argv[i + 1]
        local score = scores[priority]
        if not score then
          score = int(-tonumber(priority))
          scores[priority] = score
        end
        local prefix = prefixes[argv[i + 2]]
        if not prefix then
          prefix = string.format('%015d', ready)
          prefixes[argv[i + 2]] = prefix
        end
        wait_args[#wait_args + 1] = score
        wait_args[#wait_args + 1] = prefix .. string.format('%015d', seq) .. id
      end
      seen[id] = state
      data_args[#data_args + 1] = id
      data_args[#data_args + 1] = argv[i + 4]
      job_args[#job_args + 1] = id
      job_args[#job_args + 1] = argv[i + 3] .. SEQ_KEY .. cmsgpack.pack(seq)
      if not plain or state ~= 'waiting' then
        answer(n, 1, state)
      end
    end
  end
  if #data_args == 0 then
    return false, false
  end
  -- with PIN: never a listpack (includes/job.lua)
  redis.call('HSET', k.data, PIN, '', unpack(data_args))
  redis.call('HSET', k.jobs, PIN, '', unpack(job_args))
  if #wait_args > 0 then
    redis.call('ZADD', k.wait, unpack(wait_args))
  end
  if #delayed_args > 0 then
    redis.call('ZADD', k.delayed, unpack(delayed_args))
  end
  return true, plain
end
