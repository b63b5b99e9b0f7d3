-- idempotency_finish: store the response of a claimed key for replays, if
-- this attempt still owns the claim; an order is stored whatever became of
-- the claim.
--
-- An order always wins, as in idempotency_load_buyer: if Redis lost the
-- claim while the attempt ran (a FLUSHALL, a restart without persistence)
-- and the buyer's answers were loaded again before the order committed,
-- the buyer's marker vouches for records that lack this key, and a replay
-- would be proven new and refused. So a 201 replaces a missing record, a
-- claim taken over and a stored refusal; only another stored order stays.
--
-- KEYS[1] idem:{buyer}:key
-- ARGV[1] hash of the request payload (must match the claim)
-- ARGV[2] owner (must match the claim: a claim taken over belongs to the
--         attempt that took it)
-- ARGV[3] HTTP status
-- ARGV[4] response body
-- ARGV[5] time to keep the record, ms
--
-- Returns 1 when stored under this attempt's claim, 2 when an order was
-- stored over a claim that was gone, taken over or refused, 0 when nothing
-- was stored (the claim is gone, done, taken over or belongs to another
-- payload, and the response is not an order).

local rec = redis.pcall('HMGET', KEYS[1], 'hash', 'state', 'owner', 'status')
-- A string is a done record a batch stored, "<hash>\n<status>\n<body>"
-- (see idempotency_answer_batch); HMGET refuses it with WRONGTYPE.
if rec.err then
  local hash, status = string.match(redis.call('GET', KEYS[1]), '^([^\n]+)\n(%d+)\n')
  rec = {hash, 'done', false, status}
end
if rec[1] == ARGV[1] and rec[2] == 'running' and rec[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[3], 'body', ARGV[4])
  redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
  return 1
end
if ARGV[3] ~= '201' or (rec[2] == 'done' and rec[4] == '201') then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'done', 'status', ARGV[3], 'body', ARGV[4])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return 2
