-- terms: an item's sale window and waiting-room settings, as the database
-- has them at row version ARGV[1]. Applied only over older terms: a load
-- that read the row before an admin's change cannot undo it.
--
-- KEYS[1] inv:{id}:meta
-- ARGV[1] row version the terms were read at
-- ARGV[2] sale start, ms ('' when none)
-- ARGV[3] sale end, ms ('' when none)
-- ARGV[4] waiting room: '1' or '0'
-- ARGV[5] admissions per second
-- ARGV[6] pass lifetime, s
-- ARGV[7] paused: '1' or '0'
--
-- Returns 1 when applied, 0 when newer terms were there.

local current = tonumber(redis.call('HGET', KEYS[1], 'terms_version') or '-1')
if current > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'terms_version', ARGV[1], 'starts', ARGV[2], 'ends', ARGV[3],
  'queued', ARGV[4], 'rate', ARGV[5], 'ttl', ARGV[6], 'paused', ARGV[7])
return 1
