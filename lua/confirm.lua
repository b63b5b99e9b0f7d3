-- confirm: the order committed in the database, so the hold ends and its
-- units stay taken. If the reaper already gave the hold back (its deadline
-- passed before the commit), the units are taken again, so the counter does
-- not keep phantom stock.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:meta
-- KEYS[6] inv:{id}:reaped     hash token -> "qty:buyer" of holds the reaper gave back
-- ARGV[1] token
--
-- Returns 1 when the hold ended, 2 when a reaped hold was taken again,
-- 0 when no hold is known (Redis was flushed; the counter was reloaded from
-- the database, which already counts this order or will be reconciled).

if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 1
end
local reaped = redis.call('HGET', KEYS[6], ARGV[1])
if not reaped then
  return 0
end
redis.call('HDEL', KEYS[6], ARGV[1])
local sep = string.find(reaped, ':', 1, true)
local qty = tonumber(string.sub(reaped, 1, sep - 1))
local buyer = string.sub(reaped, sep + 1)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DECRBY', KEYS[1], qty)
end
local limit = tonumber(redis.call('HGET', KEYS[5], 'max_per_buyer') or '0')
if limit > 0 then
  redis.call('HINCRBY', KEYS[4], buyer, qty)
end
return 2
