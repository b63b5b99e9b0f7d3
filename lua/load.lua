-- load: set an item's counter from the database, only if it is absent (after
-- a first sale, a FLUSHALL or a restart without persistence). Holds that
-- survived are subtracted: their units are not in the database's count yet.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:meta
-- ARGV[1] stock in the database
-- ARGV[2] version of the row that stock was read from
-- ARGV[3] max_per_buyer (0 = no limit)
--
-- Returns {1, counter} when loaded now, {0, counter} when it was present.

local current = redis.call('GET', KEYS[1])
if current then
  return {0, tonumber(current)}
end
local held = 0
for _, hold in ipairs(redis.call('HVALS', KEYS[2])) do
  held = held + tonumber(string.match(hold, '^(%d+)'))
end
local counter = tonumber(ARGV[1]) - held
redis.call('SET', KEYS[1], counter)
redis.call('HSET', KEYS[3], 'version', ARGV[2], 'max_per_buyer', ARGV[3])
return {1, counter}
