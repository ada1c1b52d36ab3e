--[[ metrics_record: add counters into one queue's metric buckets (RedisBackend.record_metrics).
Every bucket is a hash of "<job name>|<field>" -> integer; each expires at the end of its
retention (minute buckets 24 h, hour buckets 30 days), which bounds storage. The
expiry is relative (PEXPIRE): time comes in from the caller's clock, not the server's.

KEYS[1] .. KEYS[n] bucket hashes of one queue (all under the queue's hash tag)
ARGV[1] MessagePack list of entries {k, x, f}: k = index into KEYS, x = ms left to live,
        f = flat list {field, increment, field, increment, ...}

Returns: number of entries applied
Errors:  -2 more than 1000 entries
Atomic.
]]
local entries = cmsgpack.unpack(ARGV[1])
if #entries > 1000 then return -2 end
for _, entry in ipairs(entries) do
  local key = KEYS[entry.k]
  local fields = entry.f
  for i = 1, #fields, 2 do
    redis.call('HINCRBY', key, fields[i], fields[i + 1])
  end
  redis.call('PEXPIRE', key, entry.x)
end
return #entries
