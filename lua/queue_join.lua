-- queue_join: put a buyer in an item's waiting room with the ticket the
-- database gave them, once: joining again keeps the place.
--
-- KEYS[1] inv:{id}:meta            hash: queue_loaded ('1' once the line
--                                  was built from the database)
-- KEYS[2] inv:{id}:line            sorted set ticket -> place (lower first)
-- KEYS[3] inv:{id}:tickets         hash buyer -> ticket
-- KEYS[4] inv:{id}:ticket_buyers   hash ticket -> buyer
-- ARGV[1] buyer
-- ARGV[2] ticket
-- ARGV[3] place: below 1 for buyers who joined before the start (the fair
--         draw), the join time in ms afterwards (arrival order)
--
-- Returns {1, ticket} when joined now, {0, ticket} when already in, {-1, ''}
-- when the line is not loaded (build it from the database first).

if redis.call('HGET', KEYS[1], 'queue_loaded') ~= '1' then
  return {-1, ''}
end
local existing = redis.call('HGET', KEYS[3], ARGV[1])
if existing then
  return {0, existing}
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[2])
return {1, ARGV[2]}
