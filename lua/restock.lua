-- restock: apply an admin stock change that the database already committed.
-- Applied only when the counter was loaded from a row older than the
-- restock; a counter loaded after it already includes the change.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:meta
-- ARGV[1] delta (may be negative)
-- ARGV[2] row version the restock produced
--
-- Returns {1, counter} when applied, {0, counter} when the counter already
-- included it, {0, -1} when no counter is loaded (the next load reads it).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, -1}
end
local loaded = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
if loaded >= tonumber(ARGV[2]) then
  return {0, tonumber(redis.call('GET', KEYS[1]))}
end
return {1, redis.call('INCRBY', KEYS[1], ARGV[1])}
