-- idempotency_abandon: drop a running claim whose attempt failed in a way
-- that is safe to retry (conflict, unavailable), so the same key may run
-- again. Only the claim's owner may drop it.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
-- ARGV[2] owner (must match the claim)
--
-- Returns 1 when dropped, 0 when there was no running claim of this owner
-- for this payload.

local rec = redis.pcall('HMGET', KEYS[1], 'hash', 'state', 'owner')
-- A string is a done record a batch stored (see idempotency_answer_batch):
-- nobody's claim. HMGET refuses it with WRONGTYPE.
if rec.err or rec[1] ~= ARGV[1] or rec[2] ~= 'running' or rec[3] ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
