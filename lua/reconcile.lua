-- reconcile: compare an item's counter with the database and repair drift,
-- but only while the item has no live hold (a hold's order may be committed
-- in the database and not yet confirmed here, which would make any
-- comparison wrong). The caller re-reads the database afterwards and runs
-- this again if an order committed in between.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:meta
-- KEYS[4] inv:{id}:reaped     dropped on a repair, as load.lua does: the
--                             stock read already counts committed orders
-- ARGV[1] stock in the database
-- ARGV[2] version of the row that stock was read from
--
-- Returns {status, value}:
--   {0, 0}      no counter loaded: nothing to compare (the next order loads it)
--   {1, holds}  live holds: skipped this time
--   {2, drift}  repaired: the counter was `drift` units off (counter - stock)
--   {3, 0}      in step

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local holds = redis.call('HLEN', KEYS[2])
if holds > 0 then
  return {1, holds}
end
local counter = tonumber(redis.call('GET', KEYS[1]))
local stock = tonumber(ARGV[1])
if counter == stock then
  return {3, 0}
end
redis.call('SET', KEYS[1], stock)
redis.call('HSET', KEYS[3], 'version', ARGV[2])
redis.call('DEL', KEYS[4])
return {2, counter - stock}
