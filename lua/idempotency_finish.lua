-- idempotency_finish: store the response of a claimed key for replays.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
-- ARGV[2] HTTP status
-- ARGV[3] response body
-- ARGV[4] time to keep the record, ms
--
-- Returns 1 when stored, 0 when the claim is gone or belongs to another payload.

if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
