-- idempotency_read: one record's fields, whichever shape holds it (a
-- claim's hash, or the string a batch stored for a done record, see
-- idempotency_answer_batch).
--
-- KEYS[1] idem:{buyer}:key
--
-- Returns {state, status, body, lease_until}, nil for a missing field (all
-- nil when there is no record).

local rec = redis.pcall('HMGET', KEYS[1], 'state', 'status', 'body', 'lease_until')
if rec.err then
  -- HMGET refuses a string with WRONGTYPE: "<hash>\n<status>\n<body>".
  local status, body = string.match(redis.call('GET', KEYS[1]), '^[^\n]+\n(%d+)\n(.*)$')
  return {'done', status, body, false}
end
return rec
