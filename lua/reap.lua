-- reap: give back holds whose deadline passed, oldest first, at most
-- ARGV[2] of them per call. Safe to run from several servers at once: each
-- hold is removed and given back in one atomic step, so exactly once. A
-- reaped hold's waiting-room pass is open again (until it expires).
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds      hash token -> "qty:buyer[:pass]"
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:reaped
-- KEYS[6] inv:{id}:passes     hash pass -> "buyer|expires_ms|state"
-- KEYS[7] inv:{id}:open       sorted set of open passes
-- ARGV[1] now, ms since epoch
-- ARGV[2] batch size
-- ARGV[3] seconds to remember reaped holds (for a late confirm)
--
-- Returns {given back, holds left}.

local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local given_back = 0
local stock_loaded = redis.call('EXISTS', KEYS[1]) == 1
for _, token in ipairs(expired) do
  redis.call('ZREM', KEYS[3], token)
  local hold = redis.call('HGET', KEYS[2], token)
  if hold then
    redis.call('HDEL', KEYS[2], token)
    local qty, buyer, pass = string.match(hold, '^(%d+):([^:]*):?(.*)$')
    qty = tonumber(qty)
    if stock_loaded then
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
    redis.call('HSET', KEYS[5], token, hold)
    given_back = given_back + 1
  end
end
if given_back > 0 then
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[3]))
end
return {given_back, redis.call('HLEN', KEYS[2])}
