--[[ metrics_record: add counters into one queue's metric buckets and lifetime totals

KEYS[1] .. KEYS[n] bucket hashes (and the totals hash) of one queue, all under the
        queue's hash tag
ARGV[1] MessagePack list of entries {k, x, f}: k = index into KEYS, x = ms left to live
        (0: never expires), f = flat list {field, increment, field, increment, ...}

(RedisBackend.record_metrics).
Every bucket is a hash of "<job name>|<field>" -> integer; each expires at the end of its
retention (minute buckets 24 h, hour buckets 30 days), which bounds storage. The
expiry is relative (PEXPIRE): time comes in from the caller's clock, not the server's.
The queue's lifetime totals are a hash of the same layout that never expires (bounded
by job names x fields): its entry has x = 0, and it is only ever incremented, so the
counters read from it never go down.

Returns: number of entries applied
Errors:  -2 more than 1000 entries
         -3 an entry with x < 0 (PEXPIRE would delete the hash at once) or a k that is
            not an index into KEYS; checked before any write, so nothing is applied
Atomic.
]]
local entries = cmsgpack.unpack(ARGV[1])
if #entries > 1000 then return -2 end
for _, entry in ipairs(entries) do
  if type(entry.x) ~= 'number' or entry.x < 0 or KEYS[entry.k] == nil then return -3 end
end
for _, entry in ipairs(entries) do
  local key = KEYS[entry.k]
  local fields = entry.f
  for i = 1, #fields, 2 do
    redis.call('HINCRBY', key, fields[i], fields[i + 1])
  end
  if entry.x > 0 then
    redis.call('PEXPIRE', key, entry.x)
  end
end
return #entries
