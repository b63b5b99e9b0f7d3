-- release: compensation when the order did not commit. Gives a hold back at
-- most once, however often it is called: a second call finds no hold and
-- changes nothing (a naive INCRBY run twice would create phantom stock).
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:reaped
-- ARGV[1] token
--
-- Returns 1 when units were given back now, 0 when the token holds nothing
-- (already released, confirmed, or reaped; a reaped record is dropped so a
-- late confirm cannot take its units again).

redis.call('HDEL', KEYS[5], ARGV[1])
local hold = redis.call('HGET', KEYS[2], ARGV[1])
if not hold then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local sep = string.find(hold, ':', 1, true)
local qty = tonumber(string.sub(hold, 1, sep - 1))
local buyer = string.sub(hold, sep + 1)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], qty)
end
if redis.call('HEXISTS', KEYS[4], buyer) == 1 then
  if redis.call('HINCRBY', KEYS[4], buyer, -qty) <= 0 then
    redis.call('HDEL', KEYS[4], buyer)
  end
end
return 1
