-- idempotency_claim: claim a buyer's idempotency key for one attempt, or
-- report what is known about it.
--
-- KEYS[1] idem:{buyer}:key  hash: hash, state (running|done), status, body,
--                           owner, lease_until; or a done record as the
--                           string "<hash>\n<status>\n<body>"
-- KEYS[2] idem:{buyer}      the buyer's marker: the generation whose records
--                           hold every answer the database keeps for this
--                           buyer (see records/generation.rs), as
--                           "<generation>", or "<generation>@<ms>" when the
--                           answers were loaded again (after Redis lost
--                           them): until <ms>, an attempt that claimed before
--                           the loss may still commit an order, so a new key
--                           is not proven to have none; or "~<id>", the
--                           fence of a load under way (see
--                           idempotency_load_fence), which vouches for
--                           nothing
-- ARGV[1] hash of the request payload
-- ARGV[2] now, ms since epoch
-- ARGV[3] lease, ms: a running claim older than this was abandoned (its
--         server died) and may be taken over
-- ARGV[4] time to keep the record, ms
-- ARGV[5] owner: a random id of this attempt
-- ARGV[6] the generation this server vouches for, or '' when it cannot
-- ARGV[7], ARGV[8] optional: HTTP status and body of an answer decided
--         before the attempt runs (a known sell-out); a key proven new is
--         stored as done with it at once
--
-- Returns {state, status, body}:
--   {0, 0, ''}        claimed; proven: no order and no answer for this key
--   {5, 0, ''}        claimed; new here, but nothing proves the database has
--                     no order for it (no generation given)
--   {6, 0, ''}        claimed by taking over an abandoned claim (unproven)
--   {7, 0, ''}        not claimed: the buyer's marker is missing or from
--                     another generation; load the buyer's answers first
--   {1, status, body} done: replay this stored response
--   {2, 0, ''}        another attempt with this key is running
--   {3, status, body} the key was used with another payload (the stored
--                     answer when done, else status 0)
--   {4, 0, ''}        proven new; now holds the given answer
--   {8, 0, ''}        claimed; new here, but the buyer's answers were loaded
--                     again less than a lease ago: an attempt from before
--                     may still commit an order for this key

local generation = ARGV[6]
local proving = generation ~= ''
local now = tonumber(ARGV[2])
local settling = false
if proving then
  local marker = redis.call('GET', KEYS[2])
  local marked, trusted_from = string.match(marker or '', '^([^@]+)@(%d+)$')
  if not marked then
    marked = marker
  end
  if marked ~= generation then
    return {7, 0, ''}
  end
  if trusted_from then
    if tonumber(trusted_from) > now then
      settling = true
    else
      -- Settled: every attempt from before the loss is past its lease.
      redis.call('SET', KEYS[2], generation, 'KEEPTTL')
    end
  end
end
local rec = redis.pcall('HMGET', KEYS[1], 'hash', 'state', 'status', 'body', 'lease_until')
-- A string is a done record a batch stored, "<hash>\n<status>\n<body>"
-- (see idempotency_answer_batch); HMGET refuses it with WRONGTYPE.
if rec.err then
  local hash, status, body = string.match(redis.call('GET', KEYS[1]), '^([^\n]+)\n(%d+)\n(.*)$')
  rec = {hash, 'done', status, body, false}
end
if not rec[1] then
  -- A known sell-out stands even while settling: no attempt from before
  -- the loss can commit an order for an item with no unit left.
  if proving and ARGV[7] then
    redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'done', 'status', ARGV[7], 'body', ARGV[8])
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
    return {4, 0, ''}
  end
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'state', 'running', 'owner', ARGV[5],
    'lease_until', now + tonumber(ARGV[3]))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  if settling then
    return {8, 0, ''}
  end
  if proving then
    return {0, 0, ''}
  end
  return {5, 0, ''}
end
if rec[1] ~= ARGV[1] then
  if rec[2] == 'done' then
    return {3, tonumber(rec[3]), rec[4]}
  end
  return {3, 0, ''}
end
if rec[2] == 'done' then
  return {1, tonumber(rec[3]), rec[4]}
end
if tonumber(rec[5]) > now then
  return {2, 0, ''}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[5], 'lease_until', now + tonumber(ARGV[3]))
return {6, 0, ''}
