-- confirm: the order committed in the database, so the hold ends and its
-- units stay taken; the waiting-room pass it was taken with is used up. If
-- the reaper already gave the hold back (its deadline passed before the
-- commit), the units are taken again, so the counter does not keep phantom
-- stock.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds      hash token -> "qty:buyer[:pass]"
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:meta
-- KEYS[6] inv:{id}:reaped     hash token -> "qty:buyer[:pass]" of holds the reaper gave back
-- KEYS[7] inv:{id}:passes     hash pass -> "buyer|expires_ms|state"
-- KEYS[8] inv:{id}:open       sorted set of open passes
-- ARGV[1] token
--
-- Returns 1 when the hold ended, 2 when a reaped hold was taken again,
-- 0 when no hold is known (Redis was flushed; the counter was reloaded from
-- the database, which already counts this order or will be reconciled).

local function use_pass(pass)
  if pass == '' then
    return
  end
  local p = redis.call('HGET', KEYS[7], pass)
  if p then
    local owner, expires, state = string.match(p, '^([^|]*)|(%d+)|(.*)$')
    if state ~= 'used' then
      redis.call('HSET', KEYS[7], pass, owner .. '|' .. expires .. '|used')
      redis.call('ZREM', KEYS[8], pass)
      redis.call('HINCRBY', KEYS[5], 'passes_used', 1)
    end
  end
end

local hold = redis.call('HGET', KEYS[2], ARGV[1])
if hold then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  local _, _, pass = string.match(hold, '^(%d+):([^:]*):?(.*)$')
  use_pass(pass)
  return 1
end
local reaped = redis.call('HGET', KEYS[6], ARGV[1])
if not reaped then
  return 0
end
redis.call('HDEL', KEYS[6], ARGV[1])
local qty, buyer, pass = string.match(reaped, '^(%d+):([^:]*):?(.*)$')
qty = tonumber(qty)
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DECRBY', KEYS[1], qty)
end
local limit = tonumber(redis.call('HGET', KEYS[5], 'max_per_buyer') or '0')
if limit > 0 then
  redis.call('HINCRBY', KEYS[4], buyer, qty)
end
use_pass(pass)
return 2
