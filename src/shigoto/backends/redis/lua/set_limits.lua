--[[ set_limits: replace a queue's rate limits and concurrency cap (claim.lua enforces

KEYS[1] limits    KEYS[2] marker
ARGV[1] rate max  ARGV[2] rate period ms   ARGV[3] max active
ARGV[4] group rate max                     ARGV[5] group rate period ms
        (each a positive integer, or "" for no limit)

them). Holds (hu, h:<group>), the sliding logs and the rotation position are kept, so
changing a limit neither resets nor skips a window. Wakes blocked workers: a raised
limit may let them claim at once.

Returns: 1
Errors:  -3  malformed arguments (not five values, or a value not a positive integer)
Atomic.
]]
if #ARGV ~= 5 then
  return -3
end
local fields = {'rm', 'rp', 'ma', 'gm', 'gp'}
local values = {}
for i, field in ipairs(fields) do
  local value = ARGV[i]
  if value ~= '' then
    local number = tonumber(value)
    if number == nil or number < 1 or number ~= math.floor(number) then
      return -3
    end
    values[#values + 1] = field
    values[#values + 1] = value
  end
end
redis.call('HDEL', KEYS[1], unpack(fields))
if #values > 0 then
  redis.call('HSET', KEYS[1], unpack(values))
end
redis.call('ZADD', KEYS[2], 0, 'w')
return 1
