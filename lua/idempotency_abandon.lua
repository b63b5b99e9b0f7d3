-- idempotency_abandon: drop a running claim whose request failed in a way
-- that is safe to retry (conflict, unavailable), so the same key may run again.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
--
-- Returns 1 when dropped, 0 when there was no running claim for this payload.

local rec = redis.call('HMGET', KEYS[1], 'hash', 'state')
if rec[1] ~= ARGV[1] or rec[2] ~= 'running' then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
