-- idempotency_answer_batch: store one answer decided before the attempts
-- ran (their item is known to be sold out) under many proven-new keys at
-- once, so a frenzy on a sold-out item costs Redis one script per batch, not
-- one per request. Single Redis only: the keys lie in different cluster
-- slots.
--
-- KEYS[2i-1] idem:{buyer}:key of attempt i
-- KEYS[2i]   idem:{buyer} marker of attempt i's buyer
-- ARGV[1]    HTTP status of the answer
-- ARGV[2]    response body of the answer
-- ARGV[3]    time to keep the records, ms
-- ARGV[4]    the generation this server vouches for
-- ARGV[4+i]  hash of attempt i's payload
--
-- Returns one integer per attempt: 1 when its key was proven new (no record,
-- the buyer's marker of this generation, "<generation>" or, while a
-- reloaded buyer's records settle, "<generation>@<ms>": a known sell-out
-- stands either way, see idempotency_claim; a load's fence "~<id>" is no
-- marker) and now holds the answer, 0
-- otherwise: that attempt must claim its key alone (idempotency_claim).
--
-- The answer is stored as one string, "<hash>\n<status>\n<body>", not as
-- the hash of a claim: SET ... NX stores it and its expiry in one command
-- where a hash takes three (EXISTS, HSET, PEXPIRE), and a sold-out flood is
-- bound by Redis. Every script that reads a record reads both shapes; the
-- string is a done record and never changes (an order replaces it whole).

local answer = '\n' .. ARGV[1] .. '\n' .. ARGV[2]
local answered = {}
local attempts = #KEYS / 2
for i = 1, attempts do
  local key, marker = KEYS[2 * i - 1], KEYS[2 * i]
  local marked = redis.call('GET', marker)
  -- The plain marker is the common case: no pattern match for it.
  if marked and marked ~= ARGV[4] then
    marked = string.match(marked, '^([^@]+)@%d+$') or marked
  end
  if marked == ARGV[4] and redis.call('SET', key, ARGV[4 + i] .. answer, 'PX', ARGV[3], 'NX') then
    answered[i] = 1
  else
    answered[i] = 0
  end
end
return answered
