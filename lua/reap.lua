-- reap: give back holds whose deadline passed, oldest first, at most
-- ARGV[2] of them per call. Safe to run from several servers at once: each
-- hold is removed and given back in one atomic step, so exactly once.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:deadlines
-- KEYS[4] inv:{id}:buyers
-- KEYS[5] inv:{id}:reaped
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
    local sep = string.find(hold, ':', 1, true)
    local qty = tonumber(string.sub(hold, 1, sep - 1))
    local buyer = string.sub(hold, sep + 1)
    if stock_loaded then
      redis.call('INCRBY', KEYS[1], qty)
    end
    if redis.call('HEXISTS', KEYS[4], buyer) == 1 then
      if redis.call('HINCRBY', KEYS[4], buyer, -qty) <= 0 then
        redis.call('HDEL', KEYS[4], buyer)
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
