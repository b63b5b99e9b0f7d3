-- return_units: give back the units of an order that the database already
-- returned to stock (an order left unpaid past its deadline expired). The
-- counter follows the database the way a restock does: only when it was
-- loaded from a row older than the return (a counter loaded after it
-- already includes the units). The buyer's count toward the per-buyer limit
-- always drops: the expired order no longer counts, so the buyer may buy
-- again (the database's limit check ignores expired orders too).
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:meta
-- KEYS[3] inv:{id}:buyers     hash buyer -> units held or bought (limit only)
-- ARGV[1] units returned (> 0)
-- ARGV[2] row version the return produced
-- ARGV[3] buyer of the expired order
--
-- Returns {1, counter} when the counter took the units back, {0, counter}
-- when it already included them, {0, -1} when no counter is loaded (the
-- next load reads the database).

local units = tonumber(ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  if redis.call('HINCRBY', KEYS[3], ARGV[3], -units) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[3])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, -1}
end
local loaded = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if loaded >= tonumber(ARGV[2]) then
  return {0, tonumber(redis.call('GET', KEYS[1]))}
end
return {1, redis.call('INCRBY', KEYS[1], units)}
