-- load: set an item's counter from the database, only if it is absent (after
-- a first sale, a FLUSHALL or a restart without persistence). Holds that
-- survived are subtracted: their units are not in the database's count yet.
-- Holds whose orders the database already has are not: their units left the
-- database's stock when the order committed (their confirm was lost, say in
-- a Redis outage), so they end here instead of being counted twice.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:meta
-- KEYS[4] inv:{id}:deadlines
-- KEYS[5] inv:{id}:reaped     holds the reaper gave back, kept for a late
--                             confirm; dropped here: the database's stock
--                             already counts the orders that committed
--                             before it was read, so a late confirm taking
--                             their units again would leave the counter
--                             below the stock (a sell-out the database does
--                             not have); one that commits after the read
--                             leaves it one unit high, which the database
--                             refuses and reconciliation repairs
-- ARGV[1] stock in the database
-- ARGV[2] version of the row that stock was read from
-- ARGV[3] max_per_buyer (0 = no limit)
-- ARGV[4..9] the item's terms at that version (see terms.lua): sale start,
--           sale end ('' when none), waiting room ('1'/'0'), admissions per
--           second, pass lifetime (s), paused ('1'/'0'); written with the
--           counter, so no order is ever taken under missing terms
-- ARGV[10..] tokens of holds whose orders committed, read after the stock:
--           a hold whose order commits in between is left out while the
--           stock still counts its units, so the counter can come out too
--           high (the database then refuses the extra order), never too low
--
-- Returns {1, counter} when loaded now, {0, counter} when it was present.

local current = redis.call('GET', KEYS[1])
if current then
  return {0, tonumber(current)}
end
redis.call('DEL', KEYS[5])
for i = 10, #ARGV do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[4], ARGV[i])
  end
end
local held = 0
for _, hold in ipairs(redis.call('HVALS', KEYS[2])) do
  held = held + tonumber(string.match(hold, '^(%d+)'))
end
local counter = tonumber(ARGV[1]) - held
redis.call('HSET', KEYS[3], 'version', ARGV[2], 'max_per_buyer', ARGV[3])
if tonumber(redis.call('HGET', KEYS[3], 'terms_version') or '-1') <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[3], 'terms_version', ARGV[2], 'starts', ARGV[4], 'ends', ARGV[5],
    'queued', ARGV[6], 'rate', ARGV[7], 'ttl', ARGV[8], 'paused', ARGV[9])
end
redis.call('SET', KEYS[1], counter)
return {1, counter}
