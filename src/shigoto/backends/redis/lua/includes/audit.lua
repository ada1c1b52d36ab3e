--[[ The audit trail's cap (the loader pastes this file where a script says
`--- @include "audit"`): audit_append.lua (on a cluster) and audit_trim.lua (after a
plain XADD on standalone Redis) both call it.

Layout: KEYS stream ({prefix}:audit), items of `n` entries (`b`: one MessagePack array
of them, or `g`: of groups of them; older items: one entry, `e`); counter
({prefix}:audit:count) the entries held.
]]

local TRIM_ITEMS = 100

-- Delete the oldest items while more than `cap` entries are held, at most TRIM_ITEMS
-- per call (later calls finish it). Returns the items deleted.
local function trim_audit(stream, counter, cap, held)
  local trimmed = 0
  while held > cap and trimmed < TRIM_ITEMS do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    if #oldest == 0 then
      break
    end
    local id, fields = oldest[1][1], oldest[1][2]
    local n = 1
    for i = 1, #fields, 2 do
      if fields[i] == 'n' then
        n = tonumber(fields[i + 1])
      end
    end
    redis.call('XDEL', stream, id)
    held = redis.call('DECRBY', counter, n)
    trimmed = trimmed + 1
  end
  if held < 0 then  -- items older than the counter were never counted
    redis.call('SET', counter, 0)
  end
  return trimmed
end
