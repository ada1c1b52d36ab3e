--[[ update_progress: store a running job's progress (JSON bytes).

KEYS[1] jobs      KEYS[2] progress
ARGV[1] job id    ARGV[2] token    ARGV[3] progress (JSON bytes)

Returns: 1
Errors:  -1  lease lost (no such job, not active, or another token holds it)
Atomic.
]]
--- @include "job"

if not holds(job_load(KEYS[1], ARGV[1]), ARGV[2]) then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
