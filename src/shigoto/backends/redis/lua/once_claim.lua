--[[ once_claim: ask to perform the effect named `key` (ctx.once), scoped to one queue.

KEYS[1] once      KEYS[2] once_exp
ARGV[1] key       ARGV[2] owner     ARGV[3] lease_ms  ARGV[4] now_ms

A done record whose TTL has not passed answers "done" with its result; an unexpired
claim by another owner answers "busy" (nothing changes); otherwise (no record, an
expired one, or a claim by this same owner) the key is claimed by `owner` until
now_ms + lease_ms. Up to 20 expired records are removed first.

Returns: {"claimed"} | {"done", result or nil} | {"busy", nil, holder, until_ms}
Errors:  none
Atomic.
]]
--- @include "job"

local REAP = 20
local once, expiry = KEYS[1], KEYS[2]
local key, owner = ARGV[1], ARGV[2]
local lease_ms, now = tonumber(ARGV[3]), tonumber(ARGV[4])

local expired = redis.call('ZRANGEBYSCORE', expiry, '-inf', '(' .. int(now), 'LIMIT', 0, REAP)
if #expired > 0 then
  redis.call('HDEL', once, unpack(expired))
  redis.call('ZREM', expiry, unpack(expired))
end

local raw = redis.call('HGET', once, key)
if raw then
  local rec = cmsgpack.unpack(raw)
  if rec.d and (rec.e == nil or rec.e > now) then
    return {'done', rec.r or false}
  end
  if rec.d == nil and rec.o ~= owner and rec.u and rec.u > now then
    return {'busy', false, rec.o, rec.u}
  end
end
local until_ms = now + lease_ms
redis.call('HSET', once, key, cmsgpack.pack({o = owner, u = until_ms, e = until_ms}))
redis.call('ZADD', expiry, int(until_ms), key)
return {'claimed'}
