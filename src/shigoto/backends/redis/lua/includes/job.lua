--[[ Helpers shared by the transition scripts. The loader (scripts.py) pastes this file
where a script says `--- @include "job"`, so each script stays one self-contained file.

Layout of one queue (every key under the queue's hash tag `{prefix:queue}`, passed in
KEYS; no key name is ever built inside a script):
  meta      hash   seq (enqueue counter), paused ("1" when paused)
  jobs      hash   id -> mutable state, a MessagePack map (records.py: StoredState); PIN
  data      hash   id -> payload and options, MessagePack written by Python (never
                   decoded here); PIN
  errors    hash   id -> JSON array of AttemptError objects, appended as text
  progress  hash   id -> JSON bytes
  result    hash   id -> JSON bytes; PIN
  wait      zset   score = -priority, member = ready_ms (15 digits) .. seq (15 digits) .. id
  delayed   zset   score = ready_ms,  member = seq (15 digits) .. id
  active    zset   score = lease_until_ms, member = id; and PIN (below)
  completed, dead, cancelled
            zset   score = 0, member = finished_ms (15 digits) .. seq (15 digits) .. id:
                   ordered by bytes, so ranges by finished_ms and keyset cursors are
                   exact (BYLEX) and the newest come last
  marker    zset   wake-up marker for blocked workers (member "w")
  dedup     hash   dedup key -> MessagePack {j = holder job id, h = held until ms}
  dedup_check zset score = when to look at the key again, member = dedup key
  once      hash   once-key -> MessagePack {o owner, u claimed until, d done ms,
                   r result, e expires}
  once_exp  zset   score = expires_ms, member = once-key
  ticks     hash   schedule name -> MessagePack {f last fire, j job id, c claimed ms}
  limits    hash   rate limits and holds of the queue (see claim.lua)
  rate      zset   sliding log of the queue's claims: score = claim ms
  grate     zset   sliding logs of the groups: score 0, member = group NUL ms(15) token
  grate_exp zset   the same members scored by claim ms (expiry)

Why `wait` is exact: the score is -priority, an integer of at most 32 bits, which a
double holds exactly. Jobs of equal priority have equal scores, and Redis orders equal
scores by the member's bytes; the member starts with two fixed-width decimal numbers,
ready_ms then seq, so byte order is (ready_ms, seq) order. No number is ever packed
into the 53-bit mantissa, so precision cannot be lost (see backend.py for the proof).

State fields (short keys): s state, n name, cm created_ms, p priority, r ready_ms,
q seq, a attempts, st stalls, ms max_stalls, sm started_ms, fm finished_ms,
w worker_id, t token, l lease_until_ms, rs reason, c cancel requested, g rate-limit group,
rc/ra keep-completed count/age_ms, fc/fa keep-dead count/age_ms (-1 = no limit).
]]

local TRIM_LIMIT = 1000

-- PIN: a member of `active` (scored +inf, after every lease) and a field of `jobs`, `data`
-- and `result`, added with their writes and never removed. Redis stores a small sorted
-- set or hash as a listpack, one flat array, in which each member or field looked up,
-- added or removed is found by scanning all of them: an `active` holding the 50 leases
-- of one worker cost a quarter of Redis' work per job, and a queue storing fewer than
-- 512 jobs scanned up to 512 entries per job read or written (bench/README.md, "Redis'
-- work per job"). An entry longer than zset-/hash-max-listpack-value (64 bytes unless
-- configured) makes the key a skiplist or hash table for good. Longer than any job id
-- (256 characters at most), PIN names no job: readers of `active` count and range below
-- +inf (count_active, recover_stalled.lua, list_jobs.lua), and the hashes are only read
-- by job id. One literal, so that no script builds it at every call.
local PIN = [[shigoto: this entry keeps the key a skiplist or hash table (see includes/job.lua)
................................................................................
................................................................................
................................................................................
................................................................................]]

local function count_active(active_key)
  return redis.call('ZCOUNT', active_key, '-inf', '(+inf')
end

local function int(n)
  return string.format('%d', n)
end

local function job_load(jobs_key, id)
  local raw = redis.call('HGET', jobs_key, id)
  if not raw then
    return nil
  end
  return cmsgpack.unpack(raw)
end

local function job_save(jobs_key, id, job)
  local packed = cmsgpack.pack(job)
  redis.call('HSET', jobs_key, id, packed)
  return packed
end

local function wait_member(job, id)
  return string.format('%015d%015d', job.r, job.q) .. id
end

local function seq_member(job, id)
  return string.format('%015d', job.q) .. id
end

-- `at`: job.fm already formatted (%015d), when a batch shares it (complete.lua)
local function fin_member(job, id, at)
  return (at or string.format('%015d', job.fm)) .. string.format('%015d', job.q) .. id
end

-- wait and final-state members both carry a 30-character ordering prefix
local function id_of_wait(member)
  return string.sub(member, 31)
end

local function id_of_fin(member)
  return string.sub(member, 31)
end

local function push_final(index_key, job, id)
  redis.call('ZADD', index_key, 0, fin_member(job, id))
end

local function id_of_seq(member)
  return string.sub(member, 16)
end

local function push_waiting(wait_key, job, id)
  redis.call('ZADD', wait_key, int(-job.p), wait_member(job, id))
end

-- Make a job ready at `run_at`: `delayed` until then, or `waiting` now. Sets job.s and
-- indexes the job; the caller saves it. Returns 1 (delayed) or 2 (waiting).
local function schedule_at(delayed_key, wait_key, job, id, run_at, now)
  job.r = run_at
  if run_at > now then
    job.s = 'delayed'
    redis.call('ZADD', delayed_key, int(run_at), seq_member(job, id))
    return 1
  end
  job.s = 'waiting'
  push_waiting(wait_key, job, id)
  return 2
end

local function holds(job, token)
  return job ~= nil and job.s == 'active' and job.t == token
end

local function append_error(errors_key, id, err_json)
  local old = redis.call('HGET', errors_key, id)
  if old and #old > 2 then
    redis.call('HSET', errors_key, id, string.sub(old, 1, -2) .. ',' .. err_json .. ']')
  else
    redis.call('HSET', errors_key, id, '[' .. err_json .. ']')
  end
end

local function wake(marker_key)
  redis.call('ZADD', marker_key, 0, 'w')
end

-- Delete every trace of a job from the hashes (its index entry is removed by the caller).
local function forget(hashes, id)
  for _, key in ipairs(hashes) do
    redis.call('HDEL', key, id)
  end
end

-- Keep the newest `count` and those finished at or after now - age_ms in a final-state
-- index; removes at most TRIM_LIMIT jobs per rule per call (later calls finish the job).
local function trim(index_key, hashes, count, age_ms, now)
  if count ~= nil and count >= 0 then
    local excess = redis.call('ZCARD', index_key) - count
    if excess > 0 then
      if excess > TRIM_LIMIT then
        excess = TRIM_LIMIT
      end
      local members = redis.call('ZRANGE', index_key, 0, excess - 1)
      for _, member in ipairs(members) do
        forget(hashes, id_of_fin(member))
      end
      redis.call('ZREMRANGEBYRANK', index_key, 0, excess - 1)
    end
  end
  if age_ms ~= nil and age_ms >= 0 then
    local before = string.format('(%015d', math.max(now - age_ms, 0))
    local members = redis.call('ZRANGE', index_key, '-', before, 'BYLEX', 'LIMIT', 0, TRIM_LIMIT)
    for _, member in ipairs(members) do
      forget(hashes, id_of_fin(member))
    end
    if #members > 0 then
      redis.call('ZREM', index_key, unpack(members))
    end
  end
end

-- A job whose cancellation was requested while it ran ends cancelled instead of going
-- back to a queue (retry, release).
local function finish_cancelled(cancelled_key, jobs_key, job, id, now)
  job.s = 'cancelled'
  job.rs = 'cancelled'
  job.fm = now
  job_save(jobs_key, id, job)
  push_final(cancelled_key, job, id)
end

-- Move up to `limit` due delayed jobs to `wait`, in due order. Returns how many moved.
local function promote(delayed_key, wait_key, jobs_key, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', int(now), 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    local id = id_of_seq(member)
    local job = job_load(jobs_key, id)
    job.s = 'waiting'
    job_save(jobs_key, id, job)
    push_waiting(wait_key, job, id)
  end
  if #due > 0 then
    redis.call('ZREM', delayed_key, unpack(due))
  end
  return #due
end
