-- idempotency_load_fence: before a buyer's durable answers are read from the
-- database, put a fence where the buyer's marker goes; the load writes only
-- while its fence still stands (idempotency_load_buyer).
--
-- Why: a load reads the database, then writes Redis. If Redis loses its
-- data in between (a FLUSHALL, a restart without persistence), an answer
-- stored after the read and before the loss (a refusal kept in the database
-- and in Redis, an order's 201) is in neither the read nor Redis, and a
-- marker written by the load would vouch for records that lack it: a replay
-- of that key would be proven new and decided again. The loss takes the
-- fence with it, so such a load writes nothing and is run again.
--
-- KEYS[1] idem:{buyer} marker
-- ARGV[1] the generation this server vouches for
-- ARGV[2] a fresh fence, "~<random id>"
-- ARGV[3] time to keep the fence, ms (longer than any read of the answers)
--
-- Returns nil when the buyer's records are already complete for this
-- generation (nothing to load), else the fence to load under: a fence
-- already standing is shared (every load that saw it read the database
-- after it was put, so every such load may write), else the fresh one.

local marker = redis.call('GET', KEYS[1])
if marker then
  if string.sub(marker, 1, 1) == '~' then
    return marker
  end
  local marked = string.match(marker, '^([^@]+)@%d+$') or marker
  if marked == ARGV[1] then
    return false
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return ARGV[2]
