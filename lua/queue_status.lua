-- queue_status: one buyer's view of an item's waiting room, in one read:
-- their ticket, place in line, pass, and whether the item sold out (no unit
-- left and no hold that could give one back), whatever the line says.
--
-- KEYS[1] inv:{id}:stock
-- KEYS[2] inv:{id}:holds
-- KEYS[3] inv:{id}:meta
-- KEYS[4] inv:{id}:line
-- KEYS[5] inv:{id}:tickets
-- KEYS[6] inv:{id}:passes
-- KEYS[7] inv:{id}:pass_of
-- ARGV[1] buyer
--
-- Returns {status, ticket, rank, pass, pass_state, pass_expires_ms,
--          sold_out, ended, before_start, paused, rate, now_ms}:
--   status -1: line not loaded; -2: counter not loaded; 0: never joined;
--   1: joined (rank is -1 when not in line: admitted or used up)

local m = redis.call('HMGET', KEYS[3], 'queue_loaded', 'starts', 'ends', 'paused', 'rate')
if m[1] ~= '1' then
  return {-1, '', -1, '', '', 0, 0, 0, 0, 0, 0, 0}
end
local stock = redis.call('GET', KEYS[1])
if not stock then
  return {-2, '', -1, '', '', 0, 0, 0, 0, 0, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ticket = redis.call('HGET', KEYS[5], ARGV[1])
if not ticket then
  return {0, '', -1, '', '', 0, 0, 0, 0, 0, 0, now}
end
local rank = redis.call('ZRANK', KEYS[4], ticket) or -1
local pass = redis.call('HGET', KEYS[7], ARGV[1]) or ''
local state, expires = '', 0
if pass ~= '' then
  local p = redis.call('HGET', KEYS[6], pass)
  if p then
    local _, e, s = string.match(p, '^([^|]*)|(%d+)|(.*)$')
    state, expires = s, tonumber(e)
  end
end
local sold_out = (tonumber(stock) <= 0 and redis.call('HLEN', KEYS[2]) == 0) and 1 or 0
local starts, ends = tonumber(m[2] or ''), tonumber(m[3] or '')
local ended = (ends and now >= ends) and 1 or 0
local before = (starts and now < starts) and 1 or 0
local paused = m[4] == '1' and 1 or 0
return {1, ticket, rank, pass, state, expires, sold_out, ended, before, paused,
  tonumber(m[5] or '0'), now}
