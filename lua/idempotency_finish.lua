-- idempotency_finish: store the response of a claimed key for replays, if
-- this attempt still owns the claim.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
-- ARGV[2] owner (must match the claim: a claim taken over belongs to the
--         attempt that took it)
-- ARGV[3] HTTP status
-- ARGV[4] response body
-- ARGV[5] time to keep the record, ms
--
-- Returns 1 when stored, 0 when the claim is gone, done, taken over or
-- belongs to another payload.

local rec = redis.call('HMGET', KEYS[1], 'hash', 'state', 'owner')
if rec[1] ~= ARGV[1] or rec[2] ~= 'running' or rec[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[3], 'body', ARGV[4])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return 1
