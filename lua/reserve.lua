-- reserve: take `qty` units of one item for one intent to buy, as a hold
-- with a deadline. Atomic: the sale window, the waiting-room pass, the
-- per-buyer limit, the check and the decrement happen in one step.
--
-- KEYS[1] inv:{id}:stock      counter of units not yet held or sold (string)
-- KEYS[2] inv:{id}:holds      hash token -> "qty:buyer[:pass]"
-- KEYS[3] inv:{id}:deadlines  sorted set token -> deadline (ms since epoch)
-- KEYS[4] inv:{id}:buyers     hash buyer -> units held or bought (limit only)
-- KEYS[5] inv:{id}:meta       hash: version, max_per_buyer, starts, ends (ms,
--                             '' when open-ended), queued ('1' with a waiting room)
-- KEYS[6] inv:{id}:passes     hash pass -> "buyer|expires_ms|state", state
--                             open, held (by a hold) or used
-- KEYS[7] inv:{id}:open       sorted set pass -> expires_ms, of open passes
-- ARGV[1] token (buyer:idempotency key)
-- ARGV[2] buyer
-- ARGV[3] qty (> 0)
-- ARGV[4] deadline, ms since epoch
-- ARGV[5] the waiting-room pass the buyer presented, or ''
--
-- The sale window and pass expiry are judged by Redis's own clock (TIME).
--
-- Returns {status, value, holds}:
--   { 1, remaining, 0}      held now
--   { 2, remaining, 0}      this token already holds stock (a retry): nothing taken
--   { 0, available, holds}  sold out: fewer than qty units left; `holds` live
--                           holds may still give units back
--   {-1, 0, 0}              counter not loaded: load it from the database first
--   {-2, already, 0}        per-buyer limit: the buyer already has `already` units
--   {-3, 0, 0}              the item has a waiting room and no pass was given
--   {-4, 0, 0}              the pass is another buyer's, expired, used or unknown
--   {-5, starts_in_ms, 0}   the sale has not started
--   {-6, 0, 0}              the sale has ended
-- Business outcomes are statuses, never error().

local stock = redis.call('GET', KEYS[1])
if not stock then
  return {-1, 0, 0}
end
stock = tonumber(stock)
local meta = redis.call('HMGET', KEYS[5], 'max_per_buyer', 'starts', 'ends', 'queued')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local starts, ends = tonumber(meta[2] or ''), tonumber(meta[3] or '')
if starts and now < starts then
  return {-5, starts - now, 0}
end
if ends and now >= ends then
  return {-6, 0, 0}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return {2, stock, 0}
end
local pass = ARGV[5]
if meta[4] == '1' then
  if pass == '' then
    return {-3, 0, 0}
  end
  local p = redis.call('HGET', KEYS[6], pass)
  if not p then
    return {-4, 0, 0}
  end
  local owner, expires, state = string.match(p, '^([^|]*)|(%d+)|(.*)$')
  if owner ~= ARGV[2] or state ~= 'open' or tonumber(expires) <= now then
    return {-4, 0, 0}
  end
else
  pass = ''
end
local qty = tonumber(ARGV[3])
local limit = tonumber(meta[1] or '0')
if pass ~= '' and limit == 0 and qty > 1 then
  -- A pass admits one unit unless the item sets a per-buyer limit.
  return {-2, 0, 0}
end
if stock < qty then
  return {0, math.max(stock, 0), redis.call('HLEN', KEYS[2])}
end
if limit > 0 then
  local already = tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
  if already + qty > limit then
    return {-2, already, 0}
  end
  redis.call('HINCRBY', KEYS[4], ARGV[2], qty)
end
local remaining = redis.call('DECRBY', KEYS[1], qty)
local hold = qty .. ':' .. ARGV[2]
if pass ~= '' then
  hold = hold .. ':' .. pass
  local p = redis.call('HGET', KEYS[6], pass)
  local owner, expires = string.match(p, '^([^|]*)|(%d+)|')
  redis.call('HSET', KEYS[6], pass, owner .. '|' .. expires .. '|held')
  redis.call('ZREM', KEYS[7], pass)
end
redis.call('HSET', KEYS[2], ARGV[1], hold)
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return {1, remaining, 0}
