-- reserve: take `qty` units of one item for one intent to buy, as a hold
-- with a deadline. Atomic: check and decrement happen in one step.
--
-- KEYS[1] inv:{id}:stock      counter of units not yet held or sold (string)
-- KEYS[2] inv:{id}:holds      hash token -> "qty:buyer"
-- KEYS[3] inv:{id}:deadlines  sorted set token -> deadline (ms since epoch)
-- KEYS[4] inv:{id}:buyers     hash buyer -> units held or bought (limit only)
-- KEYS[5] inv:{id}:meta       hash: version (of the load), max_per_buyer
-- ARGV[1] token (buyer:idempotency key)
-- ARGV[2] buyer
-- ARGV[3] qty (> 0)
-- ARGV[4] deadline, ms since epoch
--
-- Returns {status, value, holds}:
--   { 1, remaining, 0}      held now
--   { 2, remaining, 0}      this token already holds stock (a retry): nothing taken
--   { 0, available, holds}  sold out: fewer than qty units left; `holds` live
--                           holds may still give units back
--   {-1, 0, 0}              counter not loaded: load it from the database first
--   {-2, already, 0}        per-buyer limit: the buyer already has `already` units
-- Business outcomes are statuses, never error().

local stock = redis.call('GET', KEYS[1])
if not stock then
  return {-1, 0, 0}
end
stock = tonumber(stock)
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {2, stock, 0}
end
local qty = tonumber(ARGV[3])
if stock < qty then
  return {0, math.max(stock, 0), redis.call('HLEN', KEYS[2])}
end
local limit = tonumber(redis.call('HGET', KEYS[5], 'max_per_buyer') or '0')
if limit > 0 then
  local already = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
  if already + qty > limit then
    return {-2, already, 0}
  end
  redis.call('HINCRBY', KEYS[4], ARGV[2], qty)
end
local remaining = redis.call('DECRBY', KEYS[1], qty)
redis.call('HSET', KEYS[2], ARGV[1], qty .. ':' .. ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return {1, remaining, 0}
