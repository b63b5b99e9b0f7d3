-- idempotency_step_aside: end an attempt's lease but keep its claim, when
-- the attempt cannot tell whether it ordered (its COMMIT went
-- unacknowledged and the orders table could not be read). The next attempt
-- with the key takes the claim over at once, proving nothing: it asks the
-- orders table before any refusal. Only the claim's owner may step aside.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
-- ARGV[2] owner (must match the claim)
--
-- Returns 1 when the lease ended, 0 when there was no running claim of this
-- owner for this payload.

local rec = redis.pcall('HMGET', KEYS[1], 'hash', 'state', 'owner')
-- A string is a done record a batch stored (see idempotency_answer_batch):
-- nobody's claim. HMGET refuses it with WRONGTYPE.
if rec.err or rec[1] ~= ARGV[1] or rec[2] ~= 'running' or rec[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'lease_until', 0)
return 1
