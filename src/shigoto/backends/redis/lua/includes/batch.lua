--[[ Helpers shared by the batch_*.lua scripts (the loader pastes this file where a script
says `--- @include "batch"`).

Layout of one batch (every key under its queue's hash tag, passed in KEYS):
  batch     hash   id, n chunk job name, cm created_ms, d definition (opaque bytes),
                   um updated_ms, tc total chunks (absent until sealed), ti total items,
                   c completed, x dead, k cancelled (chunk counts), cr cancel requested,
                   fm finished_ms, o outcome, f follow-up job id
  pending   set    indices of chunks not yet recorded final
  failed    zset   score = member = index of a chunk that ended dead or cancelled
  index     zset   (per queue) score = created_ms, member = batch id
  open      zset   (per queue) the unfinished batches, same scores
]]

local BATCH_COUNTER = {completed = 'c', dead = 'x', cancelled = 'k'}
local FAILED_LISTED = 1000

-- The batch as a reply: its hash (flat field/value list) and up to 1000 failed indices.
local function batch_reply(batch_key, failed_key)
  return {redis.call('HGETALL', batch_key), redis.call('ZRANGE', failed_key, 0, FAILED_LISTED - 1)}
end

-- Count chunk `idx` as `state` when it is still pending; returns 1 when counted.
local function batch_count(batch_key, pending_key, failed_key, idx, state)
  local field = BATCH_COUNTER[state]
  if not field or redis.call('SREM', pending_key, idx) == 0 then
    return 0
  end
  redis.call('HINCRBY', batch_key, field, 1)
  if state ~= 'completed' then
    redis.call('ZADD', failed_key, idx, idx)
  end
  return 1
end
