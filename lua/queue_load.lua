-- queue_load: build an item's waiting room from the tickets the database
-- keeps (after a first join, a FLUSHALL or a restart), once. Buyers who
-- already ordered the item keep their ticket but leave the line.
--
-- KEYS[1] inv:{id}:meta
-- KEYS[2] inv:{id}:line
-- KEYS[3] inv:{id}:tickets
-- KEYS[4] inv:{id}:ticket_buyers
-- ARGV[4i-3..4i] buyer, ticket, place, in line ('1' or '0') of ticket i
--
-- Returns 1 when built now, 0 when it was already there.

if redis.call('HGET', KEYS[1], 'queue_loaded') == '1' then
  return 0
end
for i = 1, #ARGV, 4 do
  local buyer, ticket, place, in_line = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  redis.call('HSET', KEYS[3], buyer, ticket)
  redis.call('HSET', KEYS[4], ticket, buyer)
  if in_line == '1' then
    redis.call('ZADD', KEYS[2], tonumber(place), ticket)
  end
end
redis.call('HSET', KEYS[1], 'queue_loaded', '1')
return 1
