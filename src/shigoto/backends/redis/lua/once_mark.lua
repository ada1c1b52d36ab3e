--[[ once_mark: record that the effect `key` happened: done, with its result, until
now_ms + ttl_ms (or for good). Always records (the effect did happen).

KEYS[1] once      KEYS[2] once_exp
ARGV[1] key       ARGV[2] owner     ARGV[3] now_ms
ARGV[4] "1" when a result follows, "0" for none    ARGV[5] result (JSON bytes)
ARGV[6] ttl_ms ("" = kept until the key is reused)

Returns: 1 when `owner` still held the claim, 0 when it had expired and someone else
         claimed or finished the key meanwhile
Errors:  none
Atomic.
]]
--- @include "job"

local once, expiry = KEYS[1], KEYS[2]
local key, owner, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', once, key)
local held = 0
if raw then
  local rec = cmsgpack.unpack(raw)
  if rec.o == owner and rec.d == nil then
    held = 1
  end
end
local rec = {o = owner, d = now}
if ARGV[4] == '1' then
  rec.r = ARGV[5]
end
if ARGV[6] ~= '' then
  rec.e = now + tonumber(ARGV[6])
  redis.call('ZADD', expiry, int(rec.e), key)
else
  redis.call('ZREM', expiry, key)
end
redis.call('HSET', once, key, cmsgpack.pack(rec))
return held
