-- idempotency_load_buyer: put a buyer's durable answers (the orders the
-- database has under their keys, and refusals it stored) into Redis and mark
-- the buyer's records complete for one generation.
--
-- An order always wins: it replaces a running claim or a stored refusal of
-- its key. Any other answer only fills a key that has no record.
--
-- Writes only under the fence put before the answers were read (see
-- idempotency_load_fence): a fence that is gone means Redis lost its data
-- since the read, or another load of the same fence finished first, and the
-- answers read may miss what was stored in between.
--
-- KEYS[1]   idem:{buyer} marker
-- KEYS[1+i] idem:{buyer}:key of answer i
-- ARGV[1]   the fence the answers were read under, "~<random id>"
-- ARGV[2]   the marker: "<generation>@<ms>", where <ms> is when every
--           attempt that may have claimed a key before Redis lost it is
--           past its lease (until then no new key of this buyer is proven
--           to have no order; see idempotency_claim)
-- ARGV[3]   time to keep the marker, ms (shorter than the records' time, so
--           a marker never outlives a record it vouched for)
-- ARGV[4]   time to keep the records, ms
-- ARGV[3i+2], ARGV[3i+3], ARGV[3i+4]  hash, HTTP status, body of answer i
--
-- Returns the number of records written, or -1 when the fence is gone and
-- nothing was written.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local written = 0
for i = 1, #KEYS - 1 do
  local key = KEYS[1 + i]
  local hash, status, body = ARGV[3 * i + 2], ARGV[3 * i + 3], ARGV[3 * i + 4]
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
    redis.call('PEXPIRE', key, tonumber(ARGV[4]))
    written = written + 1
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return written
