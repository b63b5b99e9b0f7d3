-- release: compensation when the order did not commit. Gives a hold back at
-- most once, however often it is called: a second call finds no hold and
-- changes nothing (a naive INCRBY run twice would create phantom stock). The
-- waiting-room pass the hold was taken with is open again (until it expires).
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds      hash token -> "qty:buyer[:pass]"
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:reaped
-- KEYS[6] inv:{id}:passes     hash pass -> "buyer|expires_ms|state"
-- KEYS[7] inv:{id}:open       sorted set of open passes
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
local qty, buyer, pass = string.match(hold, '^(%d+):([^:]*):?(.*)$')
qty = tonumber(qty)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], qty)
end
if redis.call('HEXISTS', KEYS[4], buyer) == 1 then
  if redis.call('HINCRBY', KEYS[4], buyer, -qty) <= 0 then
    redis.call('HDEL', KEYS[4], buyer)
  end
end
if pass ~= '' then
  local p = redis.call('HGET', KEYS[6], pass)
  if p then
    local owner, expires, state = string.match(p, '^([^|]*)|(%d+)|(.*)$')
    if state == 'held' then
      redis.call('HSET', KEYS[6], pass, owner .. '|' .. expires .. '|open')
      redis.call('ZADD', KEYS[7], expires, pass)
    end
  end
end
return 1
