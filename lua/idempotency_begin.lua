-- idempotency_begin: claim an idempotency key for one request, or report
-- what an earlier request with the same key did.
--
-- KEYS[1] idem:{buyer}:key    hash: hash, state (running|done), status, body, lease_until
-- ARGV[1] hash of the request payload
-- ARGV[2] now, ms since epoch
-- ARGV[3] lease, ms: a running claim older than this was abandoned (its
--         server died) and may be taken over
-- ARGV[4] time to keep the record, ms
-- ARGV[5], ARGV[6] optional: HTTP status and body of an answer decided before
--         the request runs (a known sell-out); a new key is stored as done
--         with it at once
--
-- Returns {state, status, body}:
--   {0, 0, ''}        claimed: run the request
--   {1, status, body} done: replay this stored response
--   {2, 0, ''}        another request with this key is running
--   {3, 0, ''}        the key was used with a different payload
--   {4, 0, ''}        the key was new and now holds the given answer

local rec = redis.call('HMGET', KEYS[1], 'hash', 'state', 'status', 'body', 'lease_until')
local now = tonumber(ARGV[2])
if not rec[1] and ARGV[5] then
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'done', 'status', ARGV[5], 'body', ARGV[6])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  return {4, 0, ''}
end
if not rec[1] then
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'running', 'lease_until', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  return {0, 0, ''}
end
if rec[1] ~= ARGV[1] then
  return {3, 0, ''}
end
if rec[2] == 'done' then
  return {1, tonumber(rec[3]), rec[4]}
end
if tonumber(rec[5]) > now then
  return {2, 0, ''}
end
redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[3]))
return {0, 0, ''}
