--[[ list_dead: one page of a queue's dead jobs matching a filter, newest death first
(finished_ms, then enqueue order, descending). Read-only.

The dead index orders members by bytes (finished_ms and seq as fixed-width decimals, see
includes/job.lua), so the cursor is an exact keyset position: the ordering prefix of the
last member looked at. Deaths and removals between pages neither repeat nor skip older
jobs. The time filters are ranges of that index; names, reasons and error types are
checked per job, looking at no more than 5,000 jobs per call: a page may then hold fewer
than `limit` jobs although more match, and only a nil cursor means the end.

KEYS[1] dead      KEYS[2] jobs      KEYS[3] errors
ARGV[1] cursor ("" = from the newest)    ARGV[2] limit (1..1000)
ARGV[3] since_ms ("" = none)             ARGV[4] until_ms ("" = none)
ARGV[5] names JSON array ("" = any)      ARGV[6] reasons JSON array ("" = any)
ARGV[7] error types JSON array ("" = any): the last error's type, or its last dotted part

Returns: {next cursor or nil, then three entries per job: id, state (MessagePack),
         errors JSON or nil}
Errors:  -2  limit outside 1..1000
         -3  malformed cursor
]]
--- @include "job"

local SCAN_BUDGET = 5000
local dead, jobs, errors = KEYS[1], KEYS[2], KEYS[3]
local cursor, limit = ARGV[1], tonumber(ARGV[2])
if limit == nil or limit < 1 or limit > 1000 then
  return -2
end
if cursor ~= '' and not string.match(cursor, '^%d+$') then
  return -3
end

local function set_of(json)
  if json == '' then
    return nil
  end
  local set = {}
  for _, value in ipairs(cjson.decode(json)) do
    set[value] = true
  end
  return set
end
local names, reasons = set_of(ARGV[5]), set_of(ARGV[6])
local types = ARGV[7] ~= '' and cjson.decode(ARGV[7]) or nil

local function type_matches(raw)
  if not raw then
    return false
  end
  local history = cjson.decode(raw)
  local last = history[#history]
  local kind = last and last.error_type
  if type(kind) ~= 'string' then
    return false
  end
  for _, wanted in ipairs(types) do
    if kind == wanted or string.sub(kind, -(#wanted + 1)) == '.' .. wanted then
      return true
    end
  end
  return false
end

local hi = '+'
if cursor ~= '' then
  hi = '(' .. cursor
end
if ARGV[4] ~= '' then
  local until_bound = string.format('(%015d', math.max(tonumber(ARGV[4]), 0))
  if hi == '+' or until_bound < hi then
    hi = until_bound
  end
end
local lo = '-'
if ARGV[3] ~= '' then
  lo = string.format('[%015d', math.max(tonumber(ARGV[3]), 0))
end

local out = {false}
local found, scanned, last, exhausted = 0, 0, nil, false
while found < limit and scanned < SCAN_BUDGET and not exhausted do
  local batch = redis.call('ZRANGE', dead, hi, lo, 'BYLEX', 'REV', 'LIMIT', 0, limit)
  exhausted = #batch < limit
  for n, member in ipairs(batch) do
    scanned = scanned + 1
    last = member
    local id = id_of_fin(member)
    local raw = redis.call('HGET', jobs, id)
    local job = cmsgpack.unpack(raw)
    local errs = redis.call('HGET', errors, id)
    if (names == nil or names[job.n]) and (reasons == nil or (job.rs and reasons[job.rs]))
      and (types == nil or type_matches(errs)) then
      found = found + 1
      out[#out + 1] = id
      out[#out + 1] = raw
      out[#out + 1] = errs
    end
    if found == limit then
      exhausted = exhausted and n == #batch
      break
    end
  end
  if last ~= nil then
    hi = '(' .. string.sub(last, 1, 30)
  end
end
if not exhausted and last ~= nil then
  out[1] = string.sub(last, 1, 30)
end
return out
