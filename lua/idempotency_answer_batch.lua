-- idempotency_answer_batch: store one answer decided before the requests ran
-- (their item is known to be sold out) under many new keys at once, so a
-- frenzy on a sold-out item costs Redis one script per batch, not one per
-- request. Single Redis only: the keys lie in different cluster slots.
--
-- KEYS[i]   idem:{buyer}:key of request i
-- ARGV[1]   HTTP status of the answer
-- ARGV[2]   response body of the answer
-- ARGV[3]   time to keep the records, ms
-- ARGV[3+i] hash of request i's payload
--
-- Returns one integer per key: 1 when the key was new and now holds the
-- answer (done, as idempotency_finish leaves it), 0 when the key already has
-- a record: that request must claim its key alone (idempotency_begin).

local answered = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'hash', ARGV[3 + i], 'state', 'done', 'status', ARGV[1], 'body', ARGV[2])
    redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    answered[i] = 1
  else
    answered[i] = 0
  end
end
return answered
