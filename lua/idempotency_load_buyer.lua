-- idempotency_load_buyer: put a buyer's durable answers (the orders the
-- database has under their keys, and refusals it stored) into Redis and mark
-- the buyer's records complete for one generation.
--
-- An order always wins: it replaces a running claim or a stored refusal of
-- its key. Any other answer only fills a key that has no record.
--
-- KEYS[1]   idem:{buyer} marker
-- KEYS[1+i] idem:{buyer}:key of answer i
-- ARGV[1]   the marker: "<generation>@<ms>", where <ms> is when every
--           attempt that may have claimed a key before Redis lost it is
--           past its lease (until then no new key of this buyer is proven
--           to have no order; see idempotency_claim)
-- ARGV[2]   time to keep the marker, ms (shorter than the records' time, so
--           a marker never outlives a record it vouched for)
-- ARGV[3]   time to keep the records, ms
-- ARGV[3i+1], ARGV[3i+2], ARGV[3i+3]  hash, HTTP status, body of answer i
--
-- Returns the number of records written.

local written = 0
for i = 1, #KEYS - 1 do
  local key = KEYS[1 + i]
  local hash, status, body = ARGV[3 * i + 1], ARGV[3 * i + 2], ARGV[3 * i + 3]
  local rec = redis.pcall('HMGET', key, 'state', 'status')
  if rec.err then
    -- A done record a batch stored, "<hash>\n<status>\n<body>" (see
    -- idempotency_answer_batch); HMGET refuses it with WRONGTYPE.
    rec = {'done', string.match(redis.call('GET', key), '^[^\n]+\n(%d+)\n')}
  end
  local fill = not rec[1]
  local order_wins = status == '201' and not (rec[1] == 'done' and rec[2] == '201')
  if fill or order_wins then
    redis.call('DEL', key)
    redis.call('HSET', key, 'hash', hash, 'state', 'done', 'status', status, 'body', body)
    redis.call('PEXPIRE', key, tonumber(ARGV[3]))
    written = written + 1
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return written
