--[[ claim: lease up to `limit` ready jobs of one queue, best first, within its limits.

KEYS[1] meta      KEYS[2] wait      KEYS[3] delayed   KEYS[4] active
KEYS[5] jobs      KEYS[6] data      KEYS[7] errors    KEYS[8] progress
KEYS[9] marker    KEYS[10] limits   KEYS[11] rate     KEYS[12] grate
KEYS[13] grate_exp
ARGV[1] now_ms    ARGV[2] limit (1..1000)    ARGV[3] worker_id
ARGV[4] lease_until_ms                       ARGV[5] token prefix (random, per call)
ARGV[6] (optional) lease_ms: take "now" from Redis' clock instead of ARGV[1], and
        lease until now + lease_ms. For a claim pipelined behind a blocking wait
        (RedisBackend.wait_and_claim): it runs when the wait ends, at a time its
        caller could not know when it sent it.

Order: priority (higher first), then ready_ms, then enqueue order: exactly the order of
the `wait` index (see includes/job.lua). Due delayed jobs are promoted first (up to
max(limit, 1000), so a due high-priority job is never hidden behind earlier-due low
ones). A paused queue yields nothing.

Limits (the `limits` hash, written by set_limits.lua; all optional):
  hu        held until (ms): nothing is claimed before it (postpone.lua, RateLimited)
  ma        max active: at most ma - (jobs in active) jobs
  rm / rp   at most rm claims in any window (t - rp, t]: `rate` is the sliding log,
            score = claim time, one member per claimed job
  gm / gp   the same per rate-limit group (job state field `g`), in `grate` (score 0,
            member = group NUL time(15 digits) token, so one group is one BYLEX range)
            and `grate_exp` (score = claim time, same member: bounded expiry)
  lg        the group served last (fair rotation)
  h:<group> the group is held until then (postpone.lua)
With gm set, the claim looks at the first 1000 ready jobs, takes one per group in turn
(groups in name order starting after `lg`; jobs without a group form the group "",
which has no group limit), and moves the scanned jobs of a group that is over its
limit or held to `delayed` until the group's next slot, so one group's backlog never
hides the others' jobs.

Returns: {next_due_ms, hold_until_ms, capped, then five entries per claimed job: id,
         state (MessagePack), data, errors JSON or nil, progress or nil}
         next_due_ms is the due time of the earliest delayed job (-1: none; also -1 for a
         paused queue), so an idle worker knows how long it may sleep.
         hold_until_ms (-1: none) is when the queue's next slot opens when its limits
         (or a hold) are used up — this claim took nothing, or all it was allowed: idle
         workers sleep until then. capped is 1 when only max_active is in the way, so a
         job finishing frees a slot at once (a worker may look again sooner), else 0.
Errors:  -2  limit outside 1..1000
A job whose stored state does not decode is not returned: it is left active with an
expired lease and max_stalls 0 (and a "CorruptRecord" entry), so recover_stalled
moves it to dead instead of the whole claim failing.
Atomic: two concurrent claims never return the same job, and never exceed a limit
together. If jobs remain waiting after a full claim, the wake-up marker is set so
another idle worker claims them.
]]
--- @include "job"

local MAX_CLAIM = 1000
local PROMOTE_ON_CLAIM = 1000
local GROUP_SCAN = 1000
local EXPIRE_BATCH = 1000
local CONCURRENCY_POLL_MS = 50
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > MAX_CLAIM then
  return -2
end
local worker, lease_until, token_prefix = ARGV[3], tonumber(ARGV[4]), ARGV[5]
if ARGV[6] then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  lease_until = now + tonumber(ARGV[6])
end
local meta, wait, delayed, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local jobs, data, errors, progress, marker = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local limits, rate, grate, grate_exp = KEYS[10], KEYS[11], KEYS[12], KEYS[13]

if redis.call('HGET', meta, 'paused') == '1' then
  return {-1, -1, 0}
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
local out = {next_due, -1, 0}

-- the queue's own limits --------------------------------------------------------------
local lim = redis.call('HMGET', limits, 'hu', 'ma', 'rm', 'rp', 'gm', 'gp', 'lg')
local held_until, max_active = tonumber(lim[1]), tonumber(lim[2])
local rate_max, rate_period = tonumber(lim[3]), tonumber(lim[4])
local group_max, group_period, last_group = tonumber(lim[5]), tonumber(lim[6]), lim[7]
if held_until and held_until > now then
  out[2] = held_until
  return out
end
local active_count, used = 0, 0
if max_active then
  active_count = count_active(active)
end
if rate_max and rate_period then
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', int(now - rate_period))
  used = redis.call('ZCARD', rate)
end
-- When the queue's limits are used up once `taken` more jobs are claimed: the time of
-- its next slot (nil: not used up) and whether only max_active is in the way.
local function next_slot(taken)
  local hold, rate_full = nil, false
  if rate_max and rate_period and used + taken >= rate_max then
    local rank = used + taken - rate_max
    local nth = redis.call('ZRANGE', rate, rank, rank, 'WITHSCORES')
    hold = (#nth > 0 and tonumber(nth[2]) or now) + rate_period
    rate_full = true
  end
  if max_active and active_count + taken >= max_active then
    local poll = now + CONCURRENCY_POLL_MS
    hold = hold and math.max(hold, poll) or poll
    return hold, not rate_full
  end
  return hold, false
end
local room = limit
if max_active then
  room = math.min(room, max_active - active_count)
end
if rate_max and rate_period then
  room = math.min(room, rate_max - used)
end
if room <= 0 then
  local hold, capped = next_slot(0)
  out[2] = hold or -1
  out[3] = capped and 1 or 0
  return out
end

-- which jobs: the head of `wait`, or one per group in turn ------------------------------
local ids, members = {}, {}
local parked_any = false
if group_max and group_period then
  -- forget group log entries that left their window (bounded; the rest next time)
  local old = redis.call('ZRANGEBYSCORE', grate_exp, '-inf', int(now - group_period),
    'LIMIT', 0, EXPIRE_BATCH)
  if #old > 0 then
    redis.call('ZREM', grate, unpack(old))
    redis.call('ZREM', grate_exp, unpack(old))
  end
  local scanned = redis.call('ZRANGE', wait, 0, GROUP_SCAN - 1)
  local lanes, names = {}, {}
  if #scanned > 0 then
    local scan_ids = {}
    for i, member in ipairs(scanned) do
      scan_ids[i] = id_of_wait(member)
    end
    local packed = redis.call('HMGET', jobs, unpack(scan_ids))
    for i, member in ipairs(scanned) do
      local ok, job = pcall(cmsgpack.unpack, packed[i] or '')
      if not ok or type(job) ~= 'table' then
        job = nil
      end
      local group = (job and type(job.g) == 'string') and job.g or ''
      if not lanes[group] then
        lanes[group] = {}
        names[#names + 1] = group
      end
      local lane = lanes[group]
      lane[#lane + 1] = {member = member, id = scan_ids[i], job = job}
    end
  end
  table.sort(names)
  if last_group then
    local after, before = {}, {}
    for _, name in ipairs(names) do
      if name > last_group then after[#after + 1] = name else before[#before + 1] = name end
    end
    for _, name in ipairs(before) do after[#after + 1] = name end
    names = after
  end

  -- a group over its limit (or held) waits as delayed until its next slot
  local function park(lane, until_ms)
    local removed = {}
    for _, entry in ipairs(lane) do
      if entry.job then
        entry.job.s = 'delayed'
        entry.job.r = until_ms
        job_save(jobs, entry.id, entry.job)
        redis.call('ZADD', delayed, int(until_ms), seq_member(entry.job, entry.id))
        removed[#removed + 1] = entry.member
      end
    end
    if #removed > 0 then
      redis.call('ZREM', wait, unpack(removed))
      parked_any = true
    end
  end

  local rooms, heads = {}, {}
  for _, name in ipairs(names) do
    heads[name] = 1
    if name == '' then
      rooms[name] = room
    else
      local group_hold = tonumber(redis.call('HGET', limits, 'h:' .. name))
      if group_hold and group_hold <= now then
        redis.call('HDEL', limits, 'h:' .. name)
        group_hold = nil
      end
      if group_hold then
        rooms[name] = 0
        park(lanes[name], group_hold)
      else
        local lo, hi = '[' .. name .. '\0', '(' .. name .. '\1'
        local used = redis.call('ZLEXCOUNT', grate, lo, hi)
        rooms[name] = group_max - used
        if used >= group_max then
          local nth = redis.call('ZRANGE', grate, lo, hi, 'BYLEX', 'LIMIT', used - group_max, 1)
          local at = tonumber(string.sub(nth[1], #name + 2, #name + 16))
          park(lanes[name], at + group_period)
        end
      end
    end
  end
  local served = nil
  local progress_made = true
  while #ids < room and progress_made do
    progress_made = false
    for _, name in ipairs(names) do
      if #ids >= room then
        break
      end
      local lane = lanes[name]
      if rooms[name] > 0 and heads[name] <= #lane then
        local entry = lane[heads[name]]
        heads[name] = heads[name] + 1
        rooms[name] = rooms[name] - 1
        ids[#ids + 1] = entry.id
        members[#members + 1] = entry.member
        served = name
        progress_made = true
      end
    end
  end
  if served then
    redis.call('HSET', limits, 'lg', served)
  end
  if #members > 0 then
    redis.call('ZREM', wait, unpack(members))
  end
  if parked_any then
    out[1] = earliest_due()
  end
else
  local popped = redis.call('ZPOPMIN', wait, room)
  for i = 1, #popped, 2 do
    ids[#ids + 1] = id_of_wait(popped[i])
  end
end
if #ids == 0 then
  if parked_any and redis.call('ZCARD', wait) > 0 then
    wake(marker)
  end
  return out
end

-- lease them ----------------------------------------------------------------------------
local packed = redis.call('HMGET', jobs, unpack(ids))
-- the pin first: a new `active` is made a skiplist at once (includes/job.lua)
local states, job_args, active_args, corrupt = {}, {}, {'+inf', PIN}, {}
-- formatted once, not per job (0.36 us each)
local lease_score, now_score = int(lease_until), int(now)
local group_stamp = string.format('%015d', now)
local rate_args, grate_args, grate_exp_args = {}, {}, {}
-- A state as records.py wrote it at enqueue, never rewritten since (see FRESH there):
-- its map starts with attempts = 0 packed as a uint8. Leasing it needs no decoding:
-- `a` becomes 1 in place (canonical, so never FRESH again) and the lease's fields are
-- appended after the old ones, which MessagePack decoders read as the later value of
-- a key seen twice (cmsgpack and msgspec both keep the last). That is 0.3 us of Redis
-- per job instead of 2.7 us for cmsgpack.unpack + pack. Not with group limits, which
-- need the job's group.
local FRESH = '\161a\204\0'
local FIXMAP, MAP16 = 128, 222  -- MessagePack map headers: 0x80 | count (< 16), 0xde
local lease_tail = not group_max
  and cmsgpack.pack('s', 'active', 'w', worker, 'l', lease_until, 'sm', now)
for n, id in ipairs(ids) do
  local until_ms = lease_until
  local raw = packed[n] or ''
  local header = string.byte(raw, 1)
  if lease_tail and header and header >= FIXMAP and header < FIXMAP + 16
    and string.sub(raw, 2, 5) == FRESH then
    local token = token_prefix .. n
    local count = header - FIXMAP + 5  -- s, w, l and sm again, and t
    states[n] = (count < 16 and string.char(FIXMAP + count) or string.char(MAP16, 0, count)) ..
      '\161a\1' .. string.sub(raw, 6) .. lease_tail .. '\161t' .. cmsgpack.pack(token)
    if rate_max then
      rate_args[#rate_args + 1] = now_score
      rate_args[#rate_args + 1] = token
    end
  else
    local ok, job = pcall(cmsgpack.unpack, raw)
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
    if rate_max then
      rate_args[#rate_args + 1] = now_score
      rate_args[#rate_args + 1] = job.t
    end
    if group_max and type(job.g) == 'string' then
      local member = job.g .. '\0' .. group_stamp .. job.t
      grate_args[#grate_args + 1] = 0
      grate_args[#grate_args + 1] = member
      grate_exp_args[#grate_exp_args + 1] = now_score
      grate_exp_args[#grate_exp_args + 1] = member
    end
  end
  job_args[#job_args + 1] = id
  job_args[#job_args + 1] = states[n]
  active_args[#active_args + 1] = corrupt[n] and int(until_ms) or lease_score
  active_args[#active_args + 1] = id
end
redis.call('HSET', jobs, unpack(job_args))
redis.call('ZADD', active, unpack(active_args))
if #rate_args > 0 then
  redis.call('ZADD', rate, unpack(rate_args))
end
if #grate_args > 0 then
  redis.call('ZADD', grate, unpack(grate_args))
  redis.call('ZADD', grate_exp, unpack(grate_exp_args))
end
local blobs = redis.call('HMGET', data, unpack(ids))
-- most queues hold no error history or progress at all: nothing to read then
local errs = redis.call('EXISTS', errors) == 1 and redis.call('HMGET', errors, unpack(ids)) or {}
local progs = redis.call('EXISTS', progress) == 1 and redis.call('HMGET', progress, unpack(ids))
  or {}
for n, id in ipairs(ids) do
  if not corrupt[n] then  -- a damaged job is not returned: nothing to run
    out[#out + 1] = id
    out[#out + 1] = states[n]
    out[#out + 1] = blobs[n]
    out[#out + 1] = errs[n] or false  -- nil would end the reply here
    out[#out + 1] = progs[n] or false
  end
end

-- a full batch may have left jobs behind: wake the next idle worker for them
if (#ids == limit or parked_any) and redis.call('ZCARD', wait) > 0 then
  wake(marker)
end
-- took all the limits allowed (not all that was asked): say when to look again
if #ids == room and room < limit then
  local hold, capped = next_slot(#ids)
  out[2] = hold or -1
  out[3] = capped and 1 or 0
end
return out
