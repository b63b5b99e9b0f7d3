-- queue_admit: let the next buyers of an item's waiting room in, each with a
-- pass, at most at the item's admission rate and never beyond the units
-- really available: the counter (units neither held nor sold) must cover
-- every open pass. Passes that expired unused go first: their buyers go to
-- the back of the line. Safe from several servers at once: the rate's token
-- bucket lives here, in the item's meta, and Redis's clock (TIME) runs it.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:meta            hash: queued, rate, ttl (s), paused, starts,
--                                  ends, max_per_buyer, queue_loaded, tokens,
--                                  last_ms, passes_expired
-- KEYS[3] inv:{id}:line
-- KEYS[4] inv:{id}:tickets
-- KEYS[5] inv:{id}:ticket_buyers
-- KEYS[6] inv:{id}:passes          hash pass -> "buyer|expires_ms|state"
-- KEYS[7] inv:{id}:open            sorted set pass -> expires_ms, of open passes
-- KEYS[8] inv:{id}:pass_of         hash buyer -> pass
-- ARGV[i] candidate pass ids (random, made by the server), used in order
--
-- Returns {admitted, expired}, or {-1, 0} when the line is not loaded and
-- {-2, 0} when the counter is not.

local m = redis.call('HMGET', KEYS[2], 'queued', 'rate', 'ttl', 'paused', 'starts', 'ends',
  'max_per_buyer', 'queue_loaded', 'tokens', 'last_ms')
if m[1] ~= '1' then
  return {0, 0}
end
if m[8] ~= '1' then
  return {-1, 0}
end
local stock = redis.call('GET', KEYS[1])
if not stock then
  return {-2, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now)
for _, pass in ipairs(expired) do
  redis.call('ZREM', KEYS[7], pass)
  local p = redis.call('HGET', KEYS[6], pass)
  if p then
    local owner = string.match(p, '^([^|]*)|')
    redis.call('HDEL', KEYS[6], pass)
    redis.call('HDEL', KEYS[8], owner)
    local ticket = redis.call('HGET', KEYS[4], owner)
    if ticket then
      redis.call('ZADD', KEYS[3], now, ticket)
    end
  end
end
if #expired > 0 then
  redis.call('HINCRBY', KEYS[2], 'passes_expired', #expired)
end

local starts, ends = tonumber(m[5] or ''), tonumber(m[6] or '')
local closed = m[4] == '1' or (starts and now < starts) or (ends and now >= ends)
if closed then
  redis.call('HSET', KEYS[2], 'tokens', 0, 'last_ms', now)
  return {0, #expired}
end
local rate = tonumber(m[2] or '0')
local last = tonumber(m[10] or '') or now
-- Up to half a second of admissions saved: a round that runs late (a busy
-- server, several instances taking turns) still lets the full rate in,
-- and no second ever sees more than one and a half times the rate.
local capacity = math.max(1, rate / 2)
local tokens = math.min(capacity, tonumber(m[9] or '0') + (now - last) * rate / 1000)
local units = math.max(1, tonumber(m[7] or '0'))
local possible = math.floor(tonumber(stock) / units) - redis.call('ZCARD', KEYS[7])
local n = math.min(math.floor(tokens), possible, redis.call('ZCARD', KEYS[3]), #ARGV)
if n < 0 then
  n = 0
end
local expires = now + tonumber(m[3] or '120') * 1000
for i = 1, n do
  local popped = redis.call('ZPOPMIN', KEYS[3])
  local buyer = redis.call('HGET', KEYS[5], popped[1])
  if buyer then
    redis.call('HSET', KEYS[6], ARGV[i], buyer .. '|' .. expires .. '|open')
    redis.call('ZADD', KEYS[7], expires, ARGV[i])
    redis.call('HSET', KEYS[8], buyer, ARGV[i])
  end
end
redis.call('HSET', KEYS[2], 'tokens', tokens - n, 'last_ms', now)
return {n, #expired}
